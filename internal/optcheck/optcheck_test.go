package optcheck

import (
	"errors"
	"testing"
	"time"
)

type cfg struct{ n int }

func TestPositive(t *testing.T) {
	var c cfg
	if err := Positive("count", 3, func(c *cfg) { c.n = 3 })(&c); err != nil || c.n != 3 {
		t.Fatalf("valid value: err %v, applied %d", err, c.n)
	}
	for _, bad := range []int{0, -1} {
		c = cfg{}
		err := Positive("count", bad, func(c *cfg) { c.n = bad })(&c)
		if !errors.Is(err, ErrInvalid) || c.n != 0 {
			t.Fatalf("value %d: err %v, applied %d; want ErrInvalid and nothing applied", bad, err, c.n)
		}
	}
	if err := CheckPositive("timeout", -time.Second); !errors.Is(err, ErrInvalid) {
		t.Fatalf("negative duration: %v", err)
	}
}

func TestApply(t *testing.T) {
	set := func(n int) func(*cfg) error { return func(c *cfg) error { c.n = n; return nil } }
	fail := func(*cfg) error { return Invalid("no") }
	var c cfg
	if err := Apply(&c, []func(*cfg) error{set(1), nil, set(2)}); err != nil || c.n != 2 {
		t.Fatalf("Apply: err %v, n %d; want nil, 2 (in order, nil skipped)", err, c.n)
	}
	if err := Apply(&c, []func(*cfg) error{fail, set(3)}); !errors.Is(err, ErrInvalid) || c.n != 2 {
		t.Fatalf("Apply with a failing option: err %v, n %d; want ErrInvalid and stop", err, c.n)
	}
}
