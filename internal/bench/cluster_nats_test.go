package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netsody/superpeer/internal/testcaddy"
)

// natsServer is an external nats-server process, built from its Go
// module (the version go.mod pins), with its monitoring endpoint on.
type natsServer struct {
	URL     string // nats://127.0.0.1:PORT
	monitor string // host:port of /varz
	pid     int
}

// natsVarz is what the benchmark reads of nats-server's /varz.
type natsVarz struct {
	Mem           int64  `json:"mem"` // resident memory, bytes
	Connections   int    `json:"connections"`
	Routes        int    `json:"routes"`
	Subscriptions uint32 `json:"subscriptions"`
	InMsgs        int64  `json:"in_msgs"`
	OutMsgs       int64  `json:"out_msgs"`
	InBytes       int64  `json:"in_bytes"`
	SlowConsumers int64  `json:"slow_consumers"`
}

// buildNATSServer builds nats-server and returns the binary's path.
func buildNATSServer(ctx context.Context, b *testing.B) string {
	b.Helper()
	return goBuild(ctx, b, "github.com/nats-io/nats-server/v2", "nats-server")
}

// startNATSServer runs bin on loopback, taking clients with token, with
// a cluster listener for routes at routePort, routing to the servers
// at routes (nats://host:port), until the benchmark ends.
func startNATSServer(ctx context.Context, b *testing.B, bin, token string, routePort int, routes ...string) *natsServer {
	b.Helper()
	port, monitor := testcaddy.FreePort(b), testcaddy.FreePort(b)
	args := []string{"-a", "127.0.0.1", "-p", strconv.Itoa(port), "-m", strconv.Itoa(monitor), "--auth", token,
		"--cluster_name", "bench", "--cluster", "nats://127.0.0.1:" + strconv.Itoa(routePort)}
	if len(routes) > 0 {
		args = append(args, "--routes", strings.Join(routes, ","))
	}
	cmd := exec.Command(bin, args...)
	// Its log (a dozen lines at start and stop) is not shown.
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	b.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	ns := &natsServer{URL: "nats://127.0.0.1:" + strconv.Itoa(port), monitor: "127.0.0.1:" + strconv.Itoa(monitor), pid: cmd.Process.Pid}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := ns.varz(ctx); err == nil {
			return ns
		}
		select {
		case <-exited:
			b.Fatal("nats-server exited at start")
		default:
		}
		if time.Now().After(deadline) {
			b.Fatal("nats-server not ready within 20s")
		}
	}
}

// varz reads the server's /varz.
func (ns *natsServer) varz(ctx context.Context) (natsVarz, error) {
	var v natsVarz
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ns.monitor+"/varz", nil)
	if err != nil {
		return v, err
	}
	resp, err := debugClient.Do(req)
	if err != nil {
		return v, fmt.Errorf("bench: nats-server /varz: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return v, fmt.Errorf("bench: nats-server /varz: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return v, fmt.Errorf("bench: nats-server /varz: %w", err)
	}
	return v, nil
}

func (ns *natsServer) mustVarz(ctx context.Context, b *testing.B) natsVarz {
	b.Helper()
	v, err := ns.varz(ctx)
	if err != nil {
		b.Fatal(err)
	}
	return v
}
