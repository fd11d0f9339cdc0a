package protocol

import (
	"fmt"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"
)

// Application requests and calls (docs/protocol.md §13b). A request is a
// whisper with sub-flag 0x22 whose first packet is an AppRequest header; the
// answer is a whisper with sub-flag 0x23 whose first packet is an
// AppResponse header. For a plain request (empty tag) the user's packets
// follow the header as further packets, in both directions.

// MaxTagLen bounds the length of a call tag in bytes.
const MaxTagLen = 64

// MaxAppErrorLen bounds the error text of a failed call's answer.
const MaxAppErrorLen = 1024

// AppStatus says how a call or request went.
type AppStatus uint8

// Statuses of an AppResponse.
const (
	AppOK         AppStatus = 0 // Body: the result (CBOR) or empty (plain request)
	AppUnknownTag AppStatus = 1 // no handler for the tag; Body empty
	AppError      AppStatus = 2 // the handler returned an error; Body: its text
	AppPanic      AppStatus = 3 // the handler panicked; Body: the panic's text
	AppBusy       AppStatus = 4 // too many calls in flight from this caller; Body empty
	AppBadArgs    AppStatus = 5 // malformed request or args; Body: the reason
	// AppLastStatus is the highest status this version defines; a receiver
	// treats a higher one as an error with the given text.
	AppLastStatus = AppBadArgs
)

// AppRequest is the header packet of an application request or call.
type AppRequest struct {
	_    struct{} `cbor:",toarray"`
	ID   uint64   // chosen by the caller, unique among its pending requests
	Tag  string   // the call's tag; "" for a plain request
	Args []byte   // the call's arguments, one CBOR value; empty for a plain request
}

// AppResponse is the header packet of the answer to an AppRequest.
type AppResponse struct {
	_      struct{} `cbor:",toarray"`
	ID     uint64   // the request's ID
	Status AppStatus
	Body   []byte // see the statuses
}

var appDecMode cbor.DecMode

func init() {
	var err error
	appDecMode, err = cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		MaxNestedLevels:   4,
		MaxArrayElements:  16,
		MaxMapPairs:       16,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		UTF8:              cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// CheckTag reports whether tag may name a call: 1 to MaxTagLen bytes of
// valid UTF-8 without control characters.
func CheckTag(tag string) error {
	if tag == "" || len(tag) > MaxTagLen || !utf8.ValidString(tag) {
		return fmt.Errorf("%w: tag must be 1 to %d bytes of UTF-8", ErrMalformed, MaxTagLen)
	}
	for _, r := range tag {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: control character in tag", ErrMalformed)
		}
	}
	return nil
}

// MarshalAppRequest encodes a request header (deterministic CBOR).
func MarshalAppRequest(r *AppRequest) []byte {
	if r.Args == nil {
		r = &AppRequest{ID: r.ID, Tag: r.Tag, Args: []byte{}}
	}
	b, err := encMode.Marshal(r)
	if err != nil {
		panic(err) // a fixed struct of encodable fields
	}
	return b
}

// MarshalAppResponse encodes a response header (deterministic CBOR).
func MarshalAppResponse(r *AppResponse) []byte {
	if r.Body == nil {
		r = &AppResponse{ID: r.ID, Status: r.Status, Body: []byte{}}
	}
	b, err := encMode.Marshal(r)
	if err != nil {
		panic(err)
	}
	return b
}

// UnmarshalAppRequest decodes a request header strictly: exactly the
// three-element array, no trailing bytes, a tag that is empty or passes
// CheckTag. Errors match ErrMalformed.
func UnmarshalAppRequest(data []byte) (AppRequest, error) {
	var r AppRequest
	if err := appDecMode.Unmarshal(data, &r); err != nil {
		return AppRequest{}, fmt.Errorf("%w: app request: %v", ErrMalformed, err)
	}
	if r.Tag != "" {
		if err := CheckTag(r.Tag); err != nil {
			return AppRequest{}, err
		}
	}
	return r, nil
}

// UnmarshalAppResponse decodes a response header strictly. Errors match
// ErrMalformed.
func UnmarshalAppResponse(data []byte) (AppResponse, error) {
	var r AppResponse
	if err := appDecMode.Unmarshal(data, &r); err != nil {
		return AppResponse{}, fmt.Errorf("%w: app response: %v", ErrMalformed, err)
	}
	if (r.Status == AppError || r.Status == AppPanic || r.Status == AppBadArgs) && len(r.Body) > MaxAppErrorLen {
		return AppResponse{}, fmt.Errorf("%w: app response: error text of %d bytes", ErrMalformed, len(r.Body))
	}
	return r, nil
}
