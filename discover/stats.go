package discover

import "sync/atomic"

// Stats counts a Service's datagrams. Every datagram received is either
// dropped under exactly one of the drop counters or handled.
type Stats struct {
	Received    uint64 // datagrams read
	ProbesSent  uint64 // probes sent (one per target)
	AnswersSent uint64
	Verified    uint64 // datagrams whose signature checked out
	Heard       uint64 // verified datagrams of peers that are listed
	Peers       int    // peers listed now

	// Drops, cheapest check first.
	Oversize      uint64 // over MaxPacketSize, unread
	RateLimited   uint64 // over Limits.Rate, undecoded
	SourcesFull   uint64 // from a new address while Limits.MaxSources addresses are busy
	SourceLimited uint64 // over Limits.SourceRate from its address
	Malformed     uint64 // not a discovery datagram of this version
	OtherProtocol uint64 // another protocol ID (subnet, version, encryption or signing)
	Self          uint64 // this node's own (a broadcast comes back)
	Stale         uint64 // time outside MaxAge, or not newer than the peer's last one (replay)
	OtherNetwork  uint64 // no proof under this node's keyring (or a proof when it has none)
	VerifyBudget  uint64 // over Limits.VerifyRate, unverified
	BadSignature  uint64 // key not the node ID's, or signature fails
	TableFull     uint64 // a new peer while MaxPeers are listed

	AnswersCapped uint64 // probes not answered: over Limits.AnswerRate
	SendErrors    uint64 // datagrams that could not be sent
}

type counters struct {
	received, probesSent, answersSent, heard, verified           atomic.Uint64
	oversize, rateLimited, sourcesFull, sourceLimited, malformed atomic.Uint64
	otherProtocol, self, stale, otherNetwork, verifyBudget       atomic.Uint64
	badSignature, tableFull, answersCapped, sendErrors           atomic.Uint64
}

// Stats returns the counters.
func (s *Service) Stats() Stats {
	c := &s.ctr
	s.mu.Lock()
	n := len(s.peers)
	s.mu.Unlock()
	return Stats{
		Received: c.received.Load(), ProbesSent: c.probesSent.Load(), AnswersSent: c.answersSent.Load(),
		Verified: c.verified.Load(), Heard: c.heard.Load(), Peers: n,
		Oversize: c.oversize.Load(), RateLimited: c.rateLimited.Load(), SourcesFull: c.sourcesFull.Load(),
		SourceLimited: c.sourceLimited.Load(), Malformed: c.malformed.Load(), OtherProtocol: c.otherProtocol.Load(),
		Self: c.self.Load(), Stale: c.stale.Load(), OtherNetwork: c.otherNetwork.Load(),
		VerifyBudget: c.verifyBudget.Load(), BadSignature: c.badSignature.Load(), TableFull: c.tableFull.Load(),
		AnswersCapped: c.answersCapped.Load(), SendErrors: c.sendErrors.Load(),
	}
}
