// Package optcheck holds what the option validation of base, mesh and chord
// shares: the ErrInvalidOption sentinel (which base re-exports) and option
// bodies that check a value before they apply it.
package optcheck

import (
	"errors"
	"fmt"
)

// ErrInvalid is base.ErrInvalidOption.
var ErrInvalid = errors.New("meshsock: invalid option")

// Invalid returns an error matching ErrInvalid.
func Invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

// Number is what Positive checks: counts, and durations (~int64).
type Number interface {
	~int | ~int64
}

// CheckPositive returns an error matching ErrInvalid unless v > 0.
func CheckPositive[T Number](name string, v T) error {
	if v <= 0 {
		return Invalid("%s must be positive, got %v", name, v)
	}
	return nil
}

// Positive returns an option body that applies set if v > 0 and otherwise
// fails with an error matching ErrInvalid naming the option.
func Positive[C any, T Number](name string, v T, set func(*C)) func(*C) error {
	return func(c *C) error {
		if err := CheckPositive(name, v); err != nil {
			return err
		}
		set(c)
		return nil
	}
}

// Apply runs the options in order on c, skipping nil ones, and returns the
// first error.
func Apply[C any, O ~func(*C) error](c *C, opts []O) error {
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(c); err != nil {
			return err
		}
	}
	return nil
}
