package meshview_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/mesh"
	"github.com/meshsock/meshsock/meshview"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// line starts a - b - c with membership on and returns them once b knows
// both others as members.
func line(t *testing.T) []*mesh.Socket {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var nodes []*mesh.Socket
	for i := range 3 {
		// Discovery off: a and c stay linked only through b.
		s, err := mesh.NewSocket("127.0.0.1:0", mesh.WithLogger(testnet.Logger(t)), mesh.WithDiscovery(false),
			mesh.WithMetadata(map[string]string{"n": strconv.Itoa(i)}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close(context.Background()) })
		if i > 0 {
			if err := s.Connect(ctx, nodes[i-1].Addr().String()); err != nil {
				t.Fatal(err)
			}
		}
		nodes = append(nodes, s)
	}
	if _, err := nodes[1].WaitMembers(ctx, 2, nodes[1].Others()); err != nil {
		t.Fatal(err)
	}
	return nodes
}

func getJSON(t *testing.T, url string) meshview.State {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("state.json served as %q", ct)
	}
	var st meshview.State
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestStateJSON: the state behind the page, mounted under a prefix as the
// package doc shows.
func TestStateJSON(t *testing.T) {
	nodes := line(t)
	mux := http.NewServeMux()
	mux.Handle("/mesh/", http.StripPrefix("/mesh", meshview.Handler(nodes[1])))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	st := getJSON(t, srv.URL+"/mesh/state.json")
	if st.Node.ID != nodes[1].ID().String() || st.Node.Addr != nodes[1].Addr().String() {
		t.Errorf("node = %+v, want b", st.Node)
	}
	want := map[string]bool{nodes[0].ID().String(): true, nodes[2].ID().String(): true}
	if len(st.Neighbours) != 2 || !want[st.Neighbours[0].ID] || !want[st.Neighbours[1].ID] {
		t.Errorf("neighbours = %+v, want a and c", st.Neighbours)
	}
	if len(st.Members) != 2 || len(st.Links) != 2 {
		t.Errorf("%d members, %d links; want 2 and 2", len(st.Members), len(st.Links))
	}
	if len(st.Paths) != 0 {
		t.Errorf("b has links to both others, yet paths %v", st.Paths)
	}
	// a reaches c through b: its view shows the path once c's member
	// messages have taught it.
	testnet.Eventually(t, 20*time.Second, func() bool {
		p := meshview.Snapshot(nodes[0]).Paths
		return len(p) == 1 && p[0] == [2]string{nodes[2].ID().String(), nodes[1].ID().String()}
	}, "a's view to show c reached through b")
	if st.Stats.Connections != 2 {
		t.Errorf("stats.Connections = %d, want 2", st.Stats.Connections)
	}
	resp, err := http.Get(srv.URL + "/mesh/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Errorf("page: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	for path, code := range map[string]int{"/mesh/nope": 404} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != code {
			t.Errorf("GET %s: %s, want %d", path, resp.Status, code)
		}
	}
	resp, err = http.Post(srv.URL+"/mesh/state.json", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %s, want 405", resp.Status)
	}
}

// chromium finds the browser, or skips the test (fails when
// MESHSOCK_REQUIRE_BROWSER is set, as CI sets it: there the browser test
// must run).
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("MESHSOCK_REQUIRE_BROWSER") != "" {
		t.Fatal("MESHSOCK_REQUIRE_BROWSER is set but no chromium is installed (.ci/scripts/install-test-tools installs it)")
	}
	t.Skip("skipping: headless Chromium is not installed (apt-get install chromium)")
	return ""
}

// TestPageInBrowser loads the page in headless Chromium, lets its script
// poll the state a few times, and checks what the rendered page shows:
// both neighbours in the table and the graph, the links, the members, and
// message rates computed from successive snapshots while a broadcast
// stream runs.
func TestPageInBrowser(t *testing.T) {
	browser := chromium(t)
	nodes := line(t)
	srv := httptest.NewServer(http.StripPrefix("/mesh", meshview.Handler(nodes[1])))
	defer srv.Close()

	// Keep traffic flowing so that rates are not zero.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				_ = nodes[0].Send(ctx, []byte("x"))
				for {
					if _, ok := nodes[2].TryRecv(); !ok {
						break
					}
				}
			}
		}
	}()
	defer func() { cancel(); <-done }()

	profile := t.TempDir()
	bctx, bcancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer bcancel()
	cmd := exec.CommandContext(bctx, browser,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+profile, "--virtual-time-budget=4000", "--dump-dom", srv.URL+"/mesh/")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, out)
	}
	dom := string(out)
	for _, n := range []*mesh.Socket{nodes[0], nodes[2]} {
		short := n.ID().Short()
		if !strings.Contains(dom, `<tr data-id="`+short+`">`) {
			t.Errorf("neighbour %s not in the table", short)
		}
		if !strings.Contains(dom, `data-id="`+short+`"></circle>`) {
			t.Errorf("neighbour %s not in the graph", short)
		}
	}
	if n := strings.Count(dom, "data-link="); n != 2 {
		t.Errorf("graph has %d links, want 2", n)
	}
	if !strings.Contains(dom, `<span id="mcount">2</span>`) {
		t.Error("member count is not 2")
	}
	m := regexp.MustCompile(`<span id="updated">(\d+)</span>`).FindStringSubmatch(dom)
	if m == nil || m[1] == "0" || m[1] == "1" {
		t.Fatalf("the page did not refresh (updated %v)", m)
	}
	rate := regexp.MustCompile(`<tr data-rate="Relayed"><td>Relayed</td><td class="n">([\d,]+)</td>`).FindStringSubmatch(dom)
	if rate == nil || rate[1] == "0" {
		t.Errorf("no relay rate shown: %v", rate)
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", dom)
	}
}
