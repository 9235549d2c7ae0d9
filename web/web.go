// Package web holds the dashboard's static files, embedded in the binary
// and served by the scorer at /. Plain HTML, CSS and JavaScript: no build
// step.
package web

import "embed"

// Static is the dashboard: static/index.html and its assets.
//
//go:embed static
var Static embed.FS
