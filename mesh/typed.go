package mesh

import (
	"context"
	"fmt"
	"reflect"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/protocol"
)

// Typed values (peerpy's data types): any CBOR-encodable Go value travels
// as one packet of deterministic CBOR, and decodes on the other side into
// a Go value of a matching type, with strict limits (no indefinite
// lengths, no tags, no duplicate map keys, nesting of at most 8 and at
// most protocol.MaxControlItems items per array or map).

// EncodeValue encodes v as deterministic CBOR (nil gives CBOR null). An
// error matches ErrBadValue.
func EncodeValue(v any) ([]byte, error) {
	b, err := protocol.MarshalCBOR(v)
	if err != nil {
		return nil, fmt.Errorf("%w: %T does not encode: %w", ErrBadValue, v, err)
	}
	return b, nil
}

// DecodeError says that a value did not decode into the Go value asked
// for. It matches ErrBadValue.
type DecodeError struct {
	Target reflect.Type // the type asked for
	Err    error        // what the decoder said
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("meshsock: value does not decode into %v: %v", e.Target, e.Err)
}

// Unwrap returns ErrBadValue and the decoder's error.
func (e *DecodeError) Unwrap() []error { return []error{ErrBadValue, e.Err} }

// Decoder holds one CBOR value received from another node: a call's
// arguments or result, or a typed message.
type Decoder struct {
	data []byte
}

// NewDecoder returns a Decoder for data (one CBOR value).
func NewDecoder(data []byte) Decoder { return Decoder{data: data} }

// Decode decodes the value into v, a non-nil pointer, strictly. A value
// that does not fit v's type fails with a *DecodeError (matching
// ErrBadValue); so does an empty value (no arguments were sent) unless v
// may hold nothing.
func (d Decoder) Decode(v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return &DecodeError{Target: reflect.TypeOf(v), Err: fmt.Errorf("target is not a non-nil pointer")}
	}
	if len(d.data) == 0 {
		return &DecodeError{Target: rv.Type().Elem(), Err: fmt.Errorf("no value")}
	}
	if err := protocol.UnmarshalCBOR(d.data, v); err != nil {
		return &DecodeError{Target: rv.Type().Elem(), Err: err}
	}
	return nil
}

// Raw returns the value's CBOR bytes. They must not be modified.
func (d Decoder) Raw() []byte { return d.data }

// SendValue broadcasts v to every node of the mesh (Send) as one packet of
// CBOR; receivers decode it with DecodeMessage.
func (s *Socket) SendValue(ctx context.Context, v any) error {
	b, err := EncodeValue(v)
	if err != nil {
		return err
	}
	return s.Send(ctx, b)
}

// WhisperValue sends v to one node (Whisper) as one packet of CBOR.
func (s *Socket) WhisperValue(ctx context.Context, to protocol.NodeID, v any) error {
	b, err := EncodeValue(v)
	if err != nil {
		return err
	}
	return s.Whisper(ctx, to, b)
}

// PublishValue publishes v on topic (Publish) as one packet of CBOR;
// subscribers decode it with DecodeMessage on what Subscription.Next
// returns.
func (s *Socket) PublishValue(ctx context.Context, topic string, v any) error {
	b, err := EncodeValue(v)
	if err != nil {
		return err
	}
	return s.Publish(ctx, topic, b)
}

// ReplyValue answers m (Message.Reply: a request's correlated answer, or
// a whisper back) with v as one packet of CBOR.
func ReplyValue(ctx context.Context, m *base.Message, v any) error {
	b, err := EncodeValue(v)
	if err != nil {
		return err
	}
	return m.Reply(ctx, b)
}

// DecodeMessage decodes the value a message carries (SendValue,
// WhisperValue, ReplyValue, PublishValue, or any message whose only packet
// is one CBOR value) into v.
func DecodeMessage(m *base.Message, v any) error {
	if len(m.Packets) != 1 {
		return &DecodeError{Target: reflect.TypeOf(v), Err: fmt.Errorf("%d packets, want 1", len(m.Packets))}
	}
	return NewDecoder(m.Packets[0]).Decode(v)
}
