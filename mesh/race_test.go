//go:build race

package mesh

// raceEnabled: the race detector slows everything several times over, so
// long tests do less of it.
const raceEnabled = true
