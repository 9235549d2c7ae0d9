package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/featurestore"
)

const storeUsage = `usage:
  pulse store repair -config FILE [-entity NAME]... [-dry-run]
      put the Redis store's segment member lists right from its vectors, after a
      Redis that lost writes (a failover to a replica behind, a restore); safe
      beside a running stream
`

// runStore is `pulse store`: maintenance of the online store.
func runStore(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(os.Stderr, storeUsage)
		return nil
	}
	switch args[0] {
	case "repair":
		return storeRepair(ctx, args[1:])
	}
	return fmt.Errorf("unknown store command %q\n\n%s", args[0], storeUsage)
}

func storeRepair(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("store repair", flag.ExitOnError)
	path := fl.String("config", "", "the config of the stream whose store to repair")
	var entities listFlag
	fl.Var(&entities, "entity", "an entity type to repair (repeatable; default: every entity type of the config's features, segments and RFM groups)")
	dryRun := fl.Bool("dry-run", false, "count what would change, change nothing")
	fl.Parse(args)
	if *path == "" {
		return errors.New("store repair: -config is required (the config of the stream whose store to repair)")
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return configError(err)
	}
	if cfg.Store.Backend != "redis" {
		return fmt.Errorf("store repair: store.backend is %q: only the Redis store keeps member lists apart from its vectors (the Pebble store writes both in one synced batch)", cfg.Store.Backend)
	}
	if len(entities) == 0 {
		entities = configEntities(cfg)
	}
	st, err := featurestore.OpenWriter(cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	r := st.(*featurestore.Redis)
	for _, e := range entities {
		rep, err := r.RepairMembers(ctx, e, *dryRun, func(rep featurestore.RepairReport) {
			fmt.Fprintf(os.Stderr, "%s: %d vectors, %d members read...\n", e, rep.Vectors, rep.Members)
		})
		verb := "added %d, removed %d"
		if *dryRun {
			verb = "would add %d, would remove %d"
		}
		fmt.Printf("%s: %d vectors, %d member lists of %d members: "+verb+"\n", e, rep.Vectors, rep.Lists, rep.Members, rep.Added, rep.Removed)
		if err != nil {
			return err
		}
	}
	return nil
}

// configEntities are the entity types of cfg's features, segments and
// RFM groups.
func configEntities(cfg *config.Config) []string {
	var out []string
	for _, f := range cfg.Features {
		out = append(out, f.Entity)
	}
	for _, s := range cfg.Segments {
		out = append(out, s.Entity)
	}
	if cfg.RFM != nil {
		out = append(out, cfg.RFM.Entity)
	}
	slices.Sort(out)
	return slices.Compact(out)
}
