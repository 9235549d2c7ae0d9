package config

// ProfileTraits names the feature that keeps the entity's profile traits
// online: the first feature of the entity with `agg: last_by_key` over the
// whole `traits` map (each trait's latest value by event time, merged
// across the person's identities like any feature). "" when there is none;
// the profile API then reads the traits from the history.
func (c *Config) ProfileTraits(entity string) string {
	for _, f := range c.Features {
		if f.Entity == entity && f.Agg == "last_by_key" && f.Field == "traits" {
			return f.Name
		}
	}
	return ""
}
