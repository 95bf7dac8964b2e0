//go:build tools

// Package tools keeps the etcd server requirement in go.mod (never compiled
// into anything: build.sh builds the etcd main package from the module cache).
package tools

import _ "go.etcd.io/etcd/server/v3"
