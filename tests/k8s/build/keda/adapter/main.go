// Command keda-adapter is the KEDA external-metrics adapter for the test-only
// control plane (tests/k8s). It wires KEDA's own packages exactly like KEDA's
// cmd/adapter does, with one difference: it starts no Prometheus /metrics
// listener. Upstream binds that listener to ":<--port>" (every interface,
// no host flag), and the test control plane must listen on 127.0.0.1 only.
// Secure serving (--bind-address/--secure-port), delegated authn/authz and
// the mTLS gRPC client to the operator are the upstream code paths.
package main

import (
	"flag"
	"fmt"
	"os"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	ctrlcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/server"
	basecmd "sigs.k8s.io/custom-metrics-apiserver/pkg/cmd"

	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	"github.com/kedacore/keda/v2/pkg/metricsservice"
	kedaprovider "github.com/kedacore/keda/v2/pkg/provider"
	kedautil "github.com/kedacore/keda/v2/pkg/util"
)

var log = ctrl.Log.WithName("keda_metrics_adapter")

func main() {
	if err := run(); err != nil {
		log.Error(err, "unable to run external metrics adapter")
		os.Exit(1)
	}
}

func run() error {
	ctx := ctrl.SetupSignalHandler()
	cmd := &basecmd.AdapterBase{Name: "keda-adapter"}
	var grpcAddr, grpcAuthority string
	cmd.Flags().StringVar(&grpcAddr, "metrics-service-address", "127.0.0.1:9666",
		"Address of the KEDA operator's gRPC Metrics Service.")
	cmd.Flags().StringVar(&grpcAuthority, "metrics-service-grpc-authority", "",
		"TLS authority override for the Metrics Service.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine) // also brings controller-runtime's --kubeconfig
	cmd.Flags().AddGoFlagSet(flag.CommandLine)
	if err := cmd.Flags().Parse(os.Args[1:]); err != nil {
		return err
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))

	s := scheme.Scheme
	if err := appsv1.AddToScheme(s); err != nil {
		return err
	}
	if err := kedav1alpha1.AddToScheme(s); err != nil {
		return err
	}
	namespaces, err := kedautil.GetWatchNamespaces()
	if err != nil {
		return fmt.Errorf("watch namespaces: %w", err)
	}
	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:  s,
		Metrics: server.Options{BindAddress: "0"}, // no metrics listener at all
		Cache:   ctrlcache.Options{DefaultNamespaces: namespaces},
	})
	if err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	// Same cert dir as the secure server (ca.crt, tls.crt, tls.key), as upstream.
	grpcClient, err := metricsservice.NewGrpcClient(ctx, grpcAddr, cmd.SecureServing.ServerCert.CertDirectory,
		grpcAuthority, "", grpcprom.NewClientMetrics(), false)
	if err != nil {
		return fmt.Errorf("gRPC client to %s: %w", grpcAddr, err)
	}
	go func() {
		if err := mgr.Start(ctx); err != nil {
			log.Error(err, "controller-runtime manager stopped")
			os.Exit(1)
		}
	}()
	cmd.WithExternalMetrics(kedaprovider.NewProvider(ctx, log, mgr.GetClient(), *grpcClient))
	log.Info("starting adapter", "metricsService", grpcAddr)
	return cmd.Run(ctx)
}
