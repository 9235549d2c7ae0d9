package config

// KeyWithScope is the first configured API key carrying scope (ScopeWrite,
// ScopeRead, ScopeAdmin), or "" when none does: what `pulse dev` prints and
// pre-fills, and what the load tests and the demo traffic send.
func (c *Config) KeyWithScope(scope string) string {
	for i := range c.Keys {
		if c.Keys[i].HasScope(scope) {
			return c.Keys[i].Key
		}
	}
	return ""
}
