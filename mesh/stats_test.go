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
	next := uint64(0)
	// fill gives every numeric field of v a distinct value and records it.
	fill := func(v reflect.Value) {
		t.Helper()
		for i := 0; i < v.NumField(); i++ {
			f, fv := v.Type().Field(i), v.Field(i)
			if !f.IsExported() || f.Anonymous {
				continue
			}
			next++
			switch fv.Kind() {
			case reflect.Int, reflect.Int64:
				fv.SetInt(int64(next))
			case reflect.Uint64:
				fv.SetUint(next)
			default:
				t.Fatalf("field %s has kind %s; extend this test", f.Name, fv.Kind())
			}
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

	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]uint64
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
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
