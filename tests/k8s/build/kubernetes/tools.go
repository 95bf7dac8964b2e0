//go:build tools

// Package tools keeps the requirements of the two binaries build.sh builds
// (from the module cache) in go.mod/go.sum.
package tools

import (
	_ "k8s.io/component-base/version"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
