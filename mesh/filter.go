package mesh

import (
	"slices"

	"github.com/meshsock/meshsock/protocol"
)

// MemberFilter selects members: Members lists those that pass every
// filter given, and a topic subscription takes the messages of publishers
// whose member record passes every filter (app-net's subscribe by groups,
// hubs and peers). A nil filter passes everything.
type MemberFilter func(m *Member) bool

// InGroups selects members of any of the groups (WithGroup). No group
// selects none.
func InGroups(groups ...string) MemberFilter {
	groups = slices.Clone(groups)
	return func(m *Member) bool { return slices.Contains(groups, m.Group) }
}

// HubsOnly selects hubs (WithHub).
func HubsOnly() MemberFilter { return func(m *Member) bool { return m.Hub } }

// OnHost selects members whose first address is on host (Member.Host).
func OnHost(host string) MemberFilter { return func(m *Member) bool { return m.Host == host } }

// IDs selects the members with these node IDs.
func IDs(ids ...protocol.NodeID) MemberFilter {
	ids = slices.Clone(ids)
	return func(m *Member) bool { return slices.Contains(ids, m.ID) }
}

// matchAll reports whether m passes every filter.
func matchAll(m *Member, filters []MemberFilter) bool {
	for _, f := range filters {
		if f != nil && !f(m) {
			return false
		}
	}
	return true
}
