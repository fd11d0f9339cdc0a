package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/meshview"
)

// TestRun starts the dashboard on a free port, reads the addresses it
// prints, and checks both pages serve what they say while the mesh runs.
func TestRun(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pr, pw := io.Pipe()
	result := make(chan error, 1)
	go func() {
		err := run(ctx, []string{"-nodes", "5", "-http", "127.0.0.1:0", "-every", "5ms"}, pw)
		pw.Close()
		result <- err
	}()
	sc := bufio.NewScanner(pr)
	var view, metricsURL string
	for (view == "" || metricsURL == "") && sc.Scan() {
		line := sc.Text()
		if u, ok := strings.CutPrefix(line, "view: "); ok {
			view = u
		}
		if u, ok := strings.CutPrefix(line, "metrics: "); ok {
			metricsURL = u
		}
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	if view == "" || metricsURL == "" {
		cancel()
		t.Fatalf("no addresses printed: %v", <-result)
	}

	// The view's node has at least its three links (ring neighbours and
	// the chord; the mesh may add more) and, once records spread, the other four nodes as members; its
	// relay count grows.
	var st meshview.State
	testnet.Eventually(t, 30*time.Second, func() bool {
		resp, err := http.Get(view + "state.json")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			return false
		}
		return len(st.Neighbours) >= 3 && len(st.Links) == len(st.Neighbours) && len(st.Members) == 4 && st.Stats.BroadcastsDelivered > 0
	}, "the view shows at least 3 neighbours, 4 members and deliveries")

	resp, err := http.Get(metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if n := strings.Count(string(body), "meshsock_mesh_originated_total{"); n != 5 {
		t.Errorf("metrics has %d originated series, want one per node (5)", n)
	}
	cancel()
	if err := <-result; err != nil {
		t.Fatalf("run: %v", err)
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-nodes", "1"}, {"-every", "0s"}, {"-nope"}} {
		if err := run(context.Background(), args, io.Discard); err == nil {
			t.Errorf("run(%q): no error", args)
		}
	}
}
