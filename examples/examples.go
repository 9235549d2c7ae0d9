// Package examples embeds the example configs so `pulse dev` runs from any
// directory with no files of its own.
package examples

import "embed"

// Ecommerce holds ecommerce/pulse.yaml and the models it names.
//
//go:embed ecommerce/pulse.yaml ecommerce/models
var Ecommerce embed.FS
