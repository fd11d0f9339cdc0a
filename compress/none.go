package compress

import "github.com/meshsock/meshsock/flags"

// noneC is the identity codec for [flags.None].
type noneC struct{}

func (noneC) Method() flags.Method { return flags.None }

func (noneC) Compress(dst, src []byte) ([]byte, error) {
	return append(dst, src...), nil
}

func (noneC) Decompress(dst, src []byte, max int) ([]byte, error) {
	if max = clampMax(max); len(src) > max {
		return dst, tooLarge(flags.None, max)
	}
	return append(dst, src...), nil
}
