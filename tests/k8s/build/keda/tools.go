//go:build tools

// Package tools keeps the requirements of the KEDA operator (built by
// build.sh from the module cache) in go.mod/go.sum. The adapter is built from
// ./adapter, which imports what it needs itself.
package tools

import (
	_ "github.com/kedacore/keda/v2/cmd/operator"
	_ "github.com/kedacore/keda/v2/version"
)
