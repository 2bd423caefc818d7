//go:build netsody_natsembed

package main

// The embedded NATS server, for the cluster tests that run one in each
// node (testcaddy.BinaryWithTags(t, "netsody_natsembed")).
import _ "github.com/netsody/superpeer/caddymodule/natsembed"
