package mesh

import (
	"github.com/meshsock/meshsock/base"
)

// link is the mesh's state of one connection to a neighbour, kept with
// the connection (base.Conn.SetLayerState).
type link struct {
	c  *base.Conn
	no uint32 // unique within the socket, never 0: names the link in the seen-state
}

// linkOf returns c's link state, making it on first use.
func (s *Socket) linkOf(c *base.Conn) *link {
	if l, ok := c.LayerState().(*link); ok {
		return l
	}
	return c.SetLayerState(&link{c: c, no: s.linkSeq.Add(1)}).(*link)
}
