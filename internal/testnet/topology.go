package testnet

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
)

// Topologies are lists of undirected edges between nodes 0..n-1. Each edge
// appears once, as {from, to}; Wire dials from -> to. None has self-loops or
// duplicate edges.

// Line returns the path 0-1-2-...-(n-1).
func Line(n int) [][2]int {
	edges := make([][2]int, 0, max(n-1, 0))
	for i := 1; i < n; i++ {
		edges = append(edges, [2]int{i - 1, i})
	}
	return edges
}

// Ring returns the cycle 0-1-...-(n-1)-0 (a line for n < 3).
func Ring(n int) [][2]int {
	edges := Line(n)
	if n >= 3 {
		edges = append(edges, [2]int{n - 1, 0})
	}
	return edges
}

// Star returns edges from every node to node 0, the hub.
func Star(n int) [][2]int {
	edges := make([][2]int, 0, max(n-1, 0))
	for i := 1; i < n; i++ {
		edges = append(edges, [2]int{i, 0})
	}
	return edges
}

// Full returns every pair {i, j} with i < j.
func Full(n int) [][2]int {
	edges := make([][2]int, 0, max(n*(n-1)/2, 0))
	for i := 0; i < n; i++ {
		for j := i + 1; j < n; j++ {
			edges = append(edges, [2]int{i, j})
		}
	}
	return edges
}

// Random returns a connected random graph: a random spanning tree, then
// extra random edges until the average degree reaches degree (or the graph
// is complete). The same rng state gives the same graph.
func Random(n, degree int, rng *rand.Rand) [][2]int {
	if n < 2 {
		return nil
	}
	type pair struct{ a, b int }
	key := func(a, b int) pair {
		if a > b {
			a, b = b, a
		}
		return pair{a, b}
	}
	seen := make(map[pair]bool)
	perm := rng.Perm(n)
	edges := make([][2]int, 0, n*max(degree, 1)/2+1)
	// Random recursive tree: each node joins one that is already placed.
	for i := 1; i < n; i++ {
		a, b := perm[i], perm[rng.IntN(i)]
		seen[key(a, b)] = true
		edges = append(edges, [2]int{a, b})
	}
	want := min(n*degree/2, n*(n-1)/2)
	for len(edges) < want {
		a, b := rng.IntN(n), rng.IntN(n)
		if a == b || seen[key(a, b)] {
			continue
		}
		seen[key(a, b)] = true
		edges = append(edges, [2]int{a, b})
	}
	return edges
}

// Degrees returns the degree of every node.
func Degrees(n int, edges [][2]int) []int {
	deg := make([]int, n)
	for _, e := range edges {
		deg[e[0]]++
		deg[e[1]]++
	}
	return deg
}

// IsConnected reports whether the graph is connected (true for n <= 1).
// Edges naming nodes outside 0..n-1 make it false.
func IsConnected(n int, edges [][2]int) bool {
	if n <= 1 {
		return true
	}
	parent := make([]int, n)
	for i := range parent {
		parent[i] = i
	}
	var find func(int) int
	find = func(x int) int {
		for parent[x] != x {
			parent[x] = parent[parent[x]]
			x = parent[x]
		}
		return x
	}
	groups := n
	for _, e := range edges {
		if e[0] < 0 || e[0] >= n || e[1] < 0 || e[1] >= n {
			return false
		}
		if a, b := find(e[0]), find(e[1]); a != b {
			parent[a] = b
			groups--
		}
	}
	return groups == 1
}

// MaxDials bounds how many connects Wire runs at once.
const MaxDials = 8

// Wire calls connect(ctx, from, to) for every edge, at most MaxDials at a
// time, and waits for all of them. It returns every failure, joined; an
// edge naming a node outside 0..n-1 is a failure and is not dialled.
func Wire(ctx context.Context, n int, edges [][2]int, connect func(ctx context.Context, from, to int) error) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		sem  = make(chan struct{}, MaxDials)
	)
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	for _, e := range edges {
		from, to := e[0], e[1]
		if from < 0 || from >= n || to < 0 || to >= n || from == to {
			fail(fmt.Errorf("testnet: bad edge %d-%d for %d nodes", from, to, n))
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			fail(fmt.Errorf("edge %d-%d: %w", from, to, ctx.Err()))
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := connect(ctx, from, to); err != nil {
				fail(fmt.Errorf("edge %d-%d: %w", from, to, err))
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
