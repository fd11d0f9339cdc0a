// Package meshview serves a live view of a mesh node over HTTP, in the
// spirit of net/http/pprof: one page showing the node, its neighbours, the
// members it knows of, the links between them as far as it knows them, and
// its message rates and drops, refreshed every second.
//
//	http.Handle("/mesh/", http.StripPrefix("/mesh", meshview.Handler(node)))
//
// The page (at the handler's root) reads "state.json" beside it; that
// JSON is the view's whole content, for scripts as well as the page. The
// view shows what the node knows: its own links, and of other nodes only
// their signed member records (WithMembership). Serve it on an address
// only operators reach: it names the node's peers and their addresses.
package meshview

import (
	_ "embed"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/meshsock/meshsock/mesh"
)

//go:embed page.html
var page []byte

// State is what state.json holds: a snapshot of one node's view.
type State struct {
	// Time is when the snapshot was taken.
	Time time.Time `json:"time"`
	// Node is the node serving the view.
	Node Node `json:"node"`
	// Neighbours are its live links.
	Neighbours []Neighbour `json:"neighbours"`
	// Members are the other nodes it knows of through their records.
	Members []Member `json:"members"`
	// Links are the links it knows of, as pairs of node IDs (its own).
	Links [][2]string `json:"links"`
	// Paths are the ways it has learnt to members it has no link to:
	// pairs of the member's ID and the neighbour a message to it goes to
	// first (mesh.Socket.Routes).
	Paths [][2]string `json:"paths"`
	// Stats are its counters (mesh.Stats, connection counters included).
	Stats mesh.Stats `json:"stats"`
	// Healthy is false while recent problems are on record; Problems
	// lists them, newest last.
	Healthy  bool      `json:"healthy"`
	Problems []Problem `json:"problems"`
}

// Node names the node serving the view.
type Node struct {
	ID    string   `json:"id"`
	Short string   `json:"short"`
	Addr  string   `json:"addr"`
	Addrs []string `json:"addrs"` // from its signed record
}

// Neighbour is one live link.
type Neighbour struct {
	ID         string    `json:"id"`
	Short      string    `json:"short"`
	Addr       string    `json:"addr"`
	RemoteAddr string    `json:"remote"`
	Outbound   bool      `json:"outbound"`
	Since      time.Time `json:"since"`
}

// Member is another node known through its record.
type Member struct {
	ID        string    `json:"id"`
	Short     string    `json:"short"`
	Addrs     []string  `json:"addrs"`
	Group     string    `json:"group,omitempty"`
	Hub       bool      `json:"hub,omitempty"`
	State     string    `json:"state"`
	LastHeard time.Time `json:"lastHeard"`
}

// Problem is one recent problem of the node.
type Problem struct {
	At    time.Time `json:"at"`
	What  string    `json:"what"`
	Err   string    `json:"err,omitempty"`
	Count int       `json:"count"`
}

// Snapshot returns node's state as the view shows it.
func Snapshot(node *mesh.Socket) State {
	self := node.ID()
	st := State{
		Time:       time.Now(),
		Node:       Node{ID: self.String(), Short: self.Short()},
		Stats:      node.Stats(),
		Neighbours: []Neighbour{},
		Members:    []Member{},
		Links:      [][2]string{},
		Paths:      [][2]string{},
		Problems:   []Problem{},
	}
	if a := node.Addr(); a != nil {
		st.Node.Addr = a.String()
	}
	if r := node.Record(); r != nil {
		st.Node.Addrs = r.Addrs
	}
	for _, p := range node.Peers() {
		st.Neighbours = append(st.Neighbours, Neighbour{
			ID: p.ID.String(), Short: p.ID.Short(), Addr: p.Addr, RemoteAddr: p.RemoteAddr,
			Outbound: p.Outbound, Since: p.Since,
		})
		st.Links = append(st.Links, [2]string{self.String(), p.ID.String()})
	}
	slices.SortFunc(st.Neighbours, func(a, b Neighbour) int { return strings.Compare(a.ID, b.ID) })
	for _, m := range node.Members(node.Others()) {
		st.Members = append(st.Members, Member{
			ID: m.ID.String(), Short: m.ID.Short(), Addrs: m.Addrs, Group: m.Group, Hub: m.Hub,
			State: m.State.String(), LastHeard: m.LastHeard,
		})
	}
	slices.SortFunc(st.Members, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
	linked := map[string]bool{}
	for _, n := range st.Neighbours {
		linked[n.ID] = true
	}
	routes := node.Routes()
	for _, m := range st.Members {
		id, err := mesh.ParseNodeID(m.ID)
		if err != nil || linked[m.ID] {
			continue
		}
		if via, ok := routes[id]; ok {
			st.Paths = append(st.Paths, [2]string{m.ID, via.String()})
		}
	}
	status := node.Status()
	st.Healthy = status.Healthy
	for _, p := range status.Problems {
		q := Problem{At: p.At, What: p.What, Count: p.Count}
		if p.Err != nil {
			q.Err = p.Err.Error()
		}
		st.Problems = append(st.Problems, q)
	}
	return st
}

// Handler returns the view of node: the page at "/" (or "" after
// http.StripPrefix) and the state at "state.json". Other paths are 404;
// methods other than GET and HEAD are 405.
func Handler(node *mesh.Socket) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		switch r.URL.Path {
		case "", "/":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'")
			_, _ = w.Write(page)
		case "/state.json", "state.json":
			w.Header().Set("Content-Type", "application/json")
			enc := json.NewEncoder(w)
			enc.SetIndent("", " ")
			_ = enc.Encode(Snapshot(node))
		default:
			http.NotFound(w, r)
		}
	})
}
