package mesh

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"
	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/logattr"
	"github.com/meshsock/meshsock/protocol"
)

// CallHandler serves calls by tag (Handle). from is the caller, proven by
// its signature or by the link the call came on; args decodes the
// caller's arguments. It returns the result, any CBOR-encodable value (nil
// for none), or an error, which the caller gets as a *RemoteError with its
// text. A panic is recovered and answered the same way; the node goes on
// serving. ctx ends when the node closes.
type CallHandler func(ctx context.Context, from protocol.NodeID, args Decoder) (any, error)

// Built-in call tags, answered by every node (app-net's built-ins).
const (
	// TagInfo answers with the node's NodeInfo: its ID and signed record.
	TagInfo = "info"
	// TagPassThrough answers with its arguments, unchanged (an echo).
	TagPassThrough = "pass_through"
	// TagTags answers with the sorted list of the tags the node serves,
	// built-in ones included.
	TagTags = "tags"
)

// NodeInfo is what the built-in TagInfo call answers: the node's ID and its
// current peer record (Socket.Record), with its addresses and metadata.
// Record is the record as the node signed it (protocol.UnmarshalRecord and Record.Verify check
// it); the other fields repeat what it says.
type NodeInfo struct {
	ID     string            `cbor:"id"`
	Addrs  []string          `cbor:"addrs"`
	Meta   map[string]string `cbor:"meta"`
	Record []byte            `cbor:"record"`
}

// RemoteError is the error Call returns when the remote handler returned
// an error (Panic false) or panicked (Panic true), or the node called could
// not read the arguments (BadArgs). Match it with errors.As.
type RemoteError struct {
	Node    protocol.NodeID
	Tag     string
	Message string // the remote error's text, or the panic's
	Panic   bool
	BadArgs bool
}

func (e *RemoteError) Error() string {
	what := "error"
	switch {
	case e.Panic:
		what = "panic"
	case e.BadArgs:
		what = "bad arguments"
	}
	return fmt.Sprintf("meshsock: call %q at %s: remote %s: %s", e.Tag, e.Node.Short(), what, e.Message)
}

// callTable holds the registered handlers and the calls in flight.
type callTable struct {
	mu        sync.Mutex
	handlers  map[string]CallHandler
	inFlight  map[protocol.NodeID]int
	total     int
	perCaller int
	max       int
}

func newCallTable(perCaller, max int) *callTable {
	return &callTable{handlers: map[string]CallHandler{}, inFlight: map[protocol.NodeID]int{}, perCaller: perCaller, max: max}
}

func isBuiltin(tag string) bool {
	return tag == TagInfo || tag == TagPassThrough || tag == TagTags
}

// Handle registers fn for calls with tag (replacing the one before; a nil
// fn removes it). Tags are 1 to protocol.MaxTagLen bytes of UTF-8 without
// control characters (else ErrInvalidTag); the built-in ones (TagInfo,
// TagPassThrough, TagTags) cannot be replaced (ErrInvalidTag).
//
// Handlers are started from the dispatcher (never a connection's reader),
// each call on a goroutine of its own, so a slow call holds up neither the
// caller's other messages nor other calls. At most WithMaxCallsPerCaller
// calls of one caller, and WithMaxCalls in all, run at once; a call over
// either bound is answered at once as busy (the caller gets ErrBusy).
func (s *Socket) Handle(tag string, fn CallHandler) error {
	if err := protocol.CheckTag(tag); err != nil {
		return fmt.Errorf("%w: %q: %w", ErrInvalidTag, tag, err)
	}
	if isBuiltin(tag) {
		return fmt.Errorf("%w: %q is built in", ErrInvalidTag, tag)
	}
	t := s.calls
	t.mu.Lock()
	defer t.mu.Unlock()
	if fn == nil {
		delete(t.handlers, tag)
	} else {
		t.handlers[tag] = fn
	}
	return nil
}

// Tags returns the sorted tags this node serves, built-in ones included.
func (s *Socket) Tags() []string {
	t := s.calls
	t.mu.Lock()
	out := make([]string, 0, len(t.handlers)+3)
	for tag := range t.handlers {
		out = append(out, tag)
	}
	t.mu.Unlock()
	out = append(out, TagInfo, TagPassThrough, TagTags)
	slices.Sort(out)
	return out
}

// Call calls the handler registered for tag at node to (Handle), however
// many hops away, with args (any CBOR-encodable value; nil for none), and
// decodes its result into result (a pointer, as for Decoder.Decode; nil
// to ignore it). It is a request (Request) whose header carries the tag and
// the arguments, so it is correlated, bounded and authenticated the same
// way.
//
// It fails with an error matching ErrUnknownTag when the node has no
// handler for tag (answered at once, in one round trip), ErrBusy when the
// node has too many calls in flight, a *RemoteError when the handler
// returned an error or panicked, ErrTimeout when ctx ends first,
// ErrNoRoute when the node cannot be found, ErrTooManyRequests over
// WithMaxPendingCalls, ErrInvalidTag for a bad tag, and ErrBadValue when
// args do not encode or the result does not decode into result (a
// *DecodeError).
func (s *Socket) Call(ctx context.Context, to protocol.NodeID, tag string, args any, result any) error {
	if err := protocol.CheckTag(tag); err != nil {
		return fmt.Errorf("%w: %q: %w", ErrInvalidTag, tag, err)
	}
	enc, err := EncodeValue(args)
	if err != nil {
		return err
	}
	_, resp, err := s.request(ctx, to, tag, enc, nil)
	if err != nil {
		return err
	}
	switch resp.Status {
	case protocol.AppOK:
		if result == nil {
			return nil
		}
		return Decoder{data: resp.Body}.Decode(result)
	case protocol.AppUnknownTag:
		return fmt.Errorf("%w: %q at %s", ErrUnknownTag, tag, to.Short())
	case protocol.AppBusy:
		return fmt.Errorf("%w: %q at %s", ErrBusy, tag, to.Short())
	default:
		msg := string(resp.Body)
		if !utf8.ValidString(msg) {
			msg = fmt.Sprintf("%q", resp.Body)
		}
		return &RemoteError{Node: to, Tag: tag, Message: msg,
			Panic: resp.Status == protocol.AppPanic, BadArgs: resp.Status == protocol.AppBadArgs}
	}
}

// serveCall is the first handler on the dispatcher: it takes the calls by
// tag (requests with a tag) and leaves everything else, plain requests
// included, to the user's handlers and Recv.
func (s *Socket) serveCall(m *base.Message) bool {
	if m.Flag != flags.AppRequest {
		return false
	}
	c, ok := m.Route.(*appCall)
	if !ok || c.tag == "" {
		return false
	}
	ctx := s.lc.Context()
	if !m.Proven {
		// The caller is not proven (an unsigned network, through the
		// mesh): its handler could not be told who calls.
		s.ctr.badRequests.Add(1)
		return true
	}
	fn, builtin := s.lookup(c.tag)
	if fn == nil && !builtin {
		s.ctr.unknownTags.Add(1)
		_ = s.answer(ctx, m.Sender, c, protocol.AppUnknownTag, nil, nil)
		return true
	}
	if builtin {
		// The built-ins are quick and do not run user code.
		s.finishCall(ctx, m.Sender, c, s.builtin(c))
		return true
	}
	if !s.calls.acquire(m.Sender) {
		s.ctr.callsBusy.Add(1)
		_ = s.answer(ctx, m.Sender, c, protocol.AppBusy, nil, nil)
		return true
	}
	from := m.Sender
	started := s.lc.Go(func() {
		defer s.calls.release(from)
		s.finishCall(ctx, from, c, s.runCall(ctx, from, c, fn))
	})
	if !started {
		s.calls.release(from)
	}
	return true
}

// callOutcome is a call's status and body.
type callOutcome struct {
	status protocol.AppStatus
	body   []byte
}

func (s *Socket) finishCall(ctx context.Context, to protocol.NodeID, c *appCall, o callOutcome) {
	if err := s.answer(ctx, to, c, o.status, o.body, nil); err != nil {
		s.log.Debug("call answer not sent", "tag", c.tag, "caller", to.Short(), "err", err)
	}
}

// runCall runs a user handler, recovering a panic.
func (s *Socket) runCall(ctx context.Context, from protocol.NodeID, c *appCall, fn CallHandler) (o callOutcome) {
	s.ctr.callsServed.Add(1)
	defer func() {
		if p := recover(); p != nil {
			s.ctr.callPanics.Add(1)
			s.log.Error("call handler panicked", "tag", c.tag, "caller", from.Short(), "panic", p, logattr.Stack(2))
			o = callOutcome{protocol.AppPanic, errorText(fmt.Sprint(p))}
		}
	}()
	res, err := fn(ctx, from, Decoder{data: c.args})
	if err != nil {
		s.ctr.callErrors.Add(1)
		status := protocol.AppError
		if errors.Is(err, ErrBadValue) {
			status = protocol.AppBadArgs
		}
		return callOutcome{status, errorText(err.Error())}
	}
	body, err := EncodeValue(res)
	if err != nil {
		s.ctr.callErrors.Add(1)
		return callOutcome{protocol.AppError, errorText("the result does not encode: " + err.Error())}
	}
	return callOutcome{protocol.AppOK, body}
}

// errorText cuts an error's text to what an answer may carry.
func errorText(s string) []byte {
	if len(s) > protocol.MaxAppErrorLen {
		s = s[:protocol.MaxAppErrorLen]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
	}
	return []byte(s)
}

// lookup returns the handler for tag, or builtin true for a built-in tag.
func (s *Socket) lookup(tag string) (fn CallHandler, builtin bool) {
	if isBuiltin(tag) {
		return nil, true
	}
	s.calls.mu.Lock()
	defer s.calls.mu.Unlock()
	return s.calls.handlers[tag], false
}

// builtin answers a built-in call.
func (s *Socket) builtin(c *appCall) callOutcome {
	var res any
	switch c.tag {
	case TagPassThrough:
		if len(c.args) == 0 {
			return callOutcome{protocol.AppOK, nil}
		}
		res = cbor.RawMessage(c.args)
	case TagTags:
		res = s.Tags()
	case TagInfo:
		r := s.Record()
		res = NodeInfo{ID: s.ID().String(), Addrs: r.Addrs, Meta: r.Meta, Record: r.Bytes()}
	}
	body, err := EncodeValue(res)
	if err != nil {
		return callOutcome{protocol.AppError, errorText(err.Error())}
	}
	return callOutcome{protocol.AppOK, body}
}

func (t *callTable) acquire(from protocol.NodeID) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.total >= t.max || t.inFlight[from] >= t.perCaller {
		return false
	}
	t.total++
	t.inFlight[from]++
	return true
}

func (t *callTable) release(from protocol.NodeID) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.total--
	if n := t.inFlight[from] - 1; n > 0 {
		t.inFlight[from] = n
	} else {
		delete(t.inFlight, from)
	}
}
