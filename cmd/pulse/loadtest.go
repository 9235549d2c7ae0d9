package main

import (
	"context"
	"errors"
)

func runLoadtest(ctx context.Context, args []string) error {
	return errors.New("not built yet")
}
