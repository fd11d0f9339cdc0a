package mesh

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/meshsock/meshsock/base"
)

// TestStatsJSONHasEveryField: encoding a mesh.Stats as JSON keeps every
// field of the embedded base.Stats and every field of mesh.Stats, each with
// its own value. A mesh field named like a base field would hide the base
// one (encoding/json drops the deeper of two fields of the same name), as
// Delivered once did. Fields are found by reflection, so new ones are
// covered without changing the test.
func TestStatsJSONHasEveryField(t *testing.T) {
	var st Stats
	want := map[string]uint64{}
	nested := map[string]reflect.Value{}
	next := uint64(0)
	// fill gives every numeric field of v a distinct value and records it.
	fill := func(v reflect.Value) {
		t.Helper()
		for i := 0; i < v.NumField(); i++ {
			f, fv := v.Type().Field(i), v.Field(i)
			if !f.IsExported() || f.Anonymous {
				continue
			}
			if fv.Kind() == reflect.Struct {
				// A group of counters (Stats.LAN): a JSON object of its own,
				// checked field by field below.
				nested[f.Name] = fv
				continue
			}
			next++
			setNumber(t, f.Name, fv, next)
			if _, dup := want[f.Name]; dup {
				t.Errorf("field %s is declared by both base.Stats and mesh.Stats; JSON keeps only one", f.Name)
			}
			want[f.Name] = next
		}
	}
	fill(reflect.ValueOf(&st.Stats).Elem())
	if n := reflect.TypeOf(base.Stats{}).NumField(); len(want) != n {
		t.Fatalf("filled %d base fields, base.Stats has %d", len(want), n)
	}
	fill(reflect.ValueOf(&st).Elem())
	for name, group := range nested {
		for i := 0; i < group.NumField(); i++ {
			if group.Type().Field(i).IsExported() {
				next++
				setNumber(t, name+"."+group.Type().Field(i).Name, group.Field(i), next)
			}
		}
	}

	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for name, r := range raw {
		if _, isGroup := nested[name]; isGroup {
			continue
		}
		var v uint64
		if err := json.Unmarshal(r, &v); err != nil {
			t.Fatalf("JSON field %s: %v", name, err)
		}
		got[name] = v
	}
	for name, group := range nested {
		var inner map[string]uint64
		if err := json.Unmarshal(raw[name], &inner); err != nil {
			t.Fatalf("JSON field %s: %v", name, err)
		}
		for i := 0; i < group.NumField(); i++ {
			f := group.Type().Field(i)
			if v := group.Field(i); f.IsExported() && number(v) != inner[f.Name] {
				t.Errorf("JSON field %s.%s = %d, want %d", name, f.Name, inner[f.Name], number(v))
			}
		}
	}
	for name, v := range want {
		g, ok := got[name]
		switch {
		case !ok:
			t.Errorf("JSON lacks field %s: %s", name, b)
		case g != v:
			t.Errorf("JSON field %s = %d, want %d (another field of the same name hides it)", name, g, v)
		}
	}
}

// setNumber sets a numeric field, and fails the test for any other kind.
func setNumber(t *testing.T, name string, v reflect.Value, n uint64) {
	t.Helper()
	switch v.Kind() {
	case reflect.Int, reflect.Int64:
		v.SetInt(int64(n))
	case reflect.Uint64:
		v.SetUint(n)
	default:
		t.Fatalf("field %s has kind %s; extend this test", name, v.Kind())
	}
}

// number reads a numeric field.
func number(v reflect.Value) uint64 {
	if v.CanInt() {
		return uint64(v.Int())
	}
	return v.Uint()
}
