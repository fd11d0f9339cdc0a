package protocol

import (
	"bytes"
	"errors"
	"os"
	"testing"
)

func goldenAppRequest() *AppRequest {
	return &AppRequest{ID: 0x0102030405060708, Tag: "add", Args: []byte{0x82, 0x01, 0x02}}
}

func goldenAppResponse() *AppResponse {
	return &AppResponse{ID: 0x0102030405060708, Status: AppOK, Body: []byte{0x03}}
}

func goldenAppError() *AppResponse {
	return &AppResponse{ID: 0x0102030405060708, Status: AppError, Body: []byte("no")}
}

func TestGoldenApp(t *testing.T) {
	checkGolden(t, "app_request", MarshalAppRequest(goldenAppRequest()))
	checkGolden(t, "app_response", MarshalAppResponse(goldenAppResponse()))
	checkGolden(t, "app_response_error", MarshalAppResponse(goldenAppError()))
	req, err := UnmarshalAppRequest(readGolden(t, "app_request"))
	if err != nil || req.ID != 0x0102030405060708 || req.Tag != "add" || !bytes.Equal(req.Args, []byte{0x82, 1, 2}) {
		t.Fatalf("app_request decodes to %+v, %v", req, err)
	}
	resp, err := UnmarshalAppResponse(readGolden(t, "app_response"))
	if err != nil || resp.ID != 0x0102030405060708 || resp.Status != AppOK || !bytes.Equal(resp.Body, []byte{3}) {
		t.Fatalf("app_response decodes to %+v, %v", resp, err)
	}
	resp, err = UnmarshalAppResponse(readGolden(t, "app_response_error"))
	if err != nil || resp.Status != AppError || string(resp.Body) != "no" {
		t.Fatalf("app_response_error decodes to %+v, %v", resp, err)
	}
	if !*update {
		text, err := os.ReadFile(specPath)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"app_request", "app_response", "app_response_error"} {
			if !bytes.Contains(text, []byte("<!-- golden: "+name+" -->")) {
				t.Errorf("docs/protocol.md shows no annotated example %q", name)
			}
		}
	}
}

func TestAppHeaderStrict(t *testing.T) {
	good := MarshalAppRequest(goldenAppRequest())
	for name, b := range map[string][]byte{
		"empty":          {},
		"trailing":       append(append([]byte{}, good...), 0),
		"four elements":  {0x84, 0x01, 0x60, 0x40, 0x00},
		"two elements":   {0x82, 0x01, 0x60},
		"indefinite":     {0x9f, 0x01, 0x60, 0x40, 0xff},
		"tagged":         {0x83, 0xc1, 0x01, 0x60, 0x40},
		"bad utf8 tag":   {0x83, 0x01, 0x61, 0xff, 0x40},
		"control in tag": {0x83, 0x01, 0x61, 0x0a, 0x40},
		"long tag":       append(append([]byte{0x83, 0x01, 0x78, 65}, bytes.Repeat([]byte("a"), 65)...), 0x40),
		"negative id":    {0x83, 0x20, 0x60, 0x40},
	} {
		if _, err := UnmarshalAppRequest(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err %v, want ErrMalformed", name, err)
		}
	}
	long := MarshalAppResponse(&AppResponse{ID: 1, Status: AppError, Body: bytes.Repeat([]byte("x"), MaxAppErrorLen+1)})
	if _, err := UnmarshalAppResponse(long); !errors.Is(err, ErrMalformed) {
		t.Errorf("long error text: err %v", err)
	}
	if err := CheckTag("pass_through"); err != nil {
		t.Error(err)
	}
}

func FuzzAppHeaders(f *testing.F) {
	f.Add(MarshalAppRequest(goldenAppRequest()))
	f.Add(MarshalAppResponse(goldenAppResponse()))
	f.Add(MarshalAppResponse(goldenAppError()))
	f.Fuzz(func(t *testing.T, data []byte) {
		if r, err := UnmarshalAppRequest(data); err == nil {
			back, err := UnmarshalAppRequest(MarshalAppRequest(&r))
			if err != nil || back.ID != r.ID || back.Tag != r.Tag || !bytes.Equal(back.Args, r.Args) {
				t.Fatalf("request %+v does not round-trip: %+v, %v", r, back, err)
			}
		}
		if r, err := UnmarshalAppResponse(data); err == nil {
			back, err := UnmarshalAppResponse(MarshalAppResponse(&r))
			if err != nil || back.ID != r.ID || back.Status != r.Status || !bytes.Equal(back.Body, r.Body) {
				t.Fatalf("response %+v does not round-trip: %+v, %v", r, back, err)
			}
		}
	})
}
