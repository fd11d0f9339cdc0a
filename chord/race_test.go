//go:build race

package chord

// raceEnabled: the race detector limits a process to 8128 live goroutines,
// so large test rings cap their links lower.
const raceEnabled = true
