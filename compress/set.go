package compress

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/meshsock/meshsock/flags"
)

// Set is an immutable collection of codecs keyed by method, so a socket can
// use custom codecs (tests register a codec that corrupts its output on
// purpose). The None codec is always present. A Set is safe for concurrent
// use.
type Set struct {
	codecs  map[flags.Method]Codec
	methods []flags.Method // sorted by value
}

// NewSet returns a Set holding the given codecs plus the built-in None codec.
// It returns an error if a codec is nil or if two codecs share a method.
// A codec for [flags.None] may be given; it then replaces the built-in one.
// Methods need not be built-in ones: a custom codec may use any method value
// both peers agree on.
func NewSet(codecs ...Codec) (*Set, error) {
	s := &Set{codecs: make(map[flags.Method]Codec, len(codecs)+1)}
	for i, c := range codecs {
		if c == nil {
			return nil, fmt.Errorf("compress: NewSet: codec %d is nil", i)
		}
		m := c.Method()
		if _, dup := s.codecs[m]; dup {
			return nil, fmt.Errorf("compress: NewSet: two codecs for method %s", m)
		}
		s.codecs[m] = c
	}
	if _, ok := s.codecs[flags.None]; !ok {
		s.codecs[flags.None] = noneCodec
	}
	s.methods = make([]flags.Method, 0, len(s.codecs))
	for m := range s.codecs {
		s.methods = append(s.methods, m)
	}
	slices.Sort(s.methods)
	return s, nil
}

var defaultSet = sync.OnceValue(func() *Set {
	s, err := NewSet(noneCodec, gzipCodec, zlibCodec, snappyCodec, zstdCodec)
	if err != nil {
		// The built-in codecs have distinct methods; this cannot happen.
		panic(errors.Join(errors.New("compress: building the default set"), err))
	}
	return s
})

// DefaultSet returns the Set of all built-in codecs (none, gzip, zlib, snappy
// and zstd). The Set is shared and immutable.
func DefaultSet() *Set { return defaultSet() }

// Get returns the codec for m and whether the Set has one.
func (s *Set) Get(m flags.Method) (Codec, bool) {
	c, ok := s.codecs[m]
	return c, ok
}

// Methods returns the methods in the Set, sorted by value, in a new slice.
func (s *Set) Methods() []flags.Method {
	return slices.Clone(s.methods)
}
