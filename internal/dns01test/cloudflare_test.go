package dns01test

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/netsody/superpeer/internal/sptest"
)

// cloudflareAPIHost is where libdns/cloudflare sends its requests; its base
// URL is a constant (https://api.cloudflare.com/client/v4).
const cloudflareAPIHost = "api.cloudflare.com:443"

// fakeCloudflare is the part of Cloudflare's v4 API that libdns/cloudflare
// v0.2.2 calls for DNS-01: look a zone up by name, create a DNS record, find
// records by type, name and content, delete a record. Each call must carry
// the token; a record created or deleted here is published to or cleared
// from challtestsrv, as Cloudflare would publish it on its nameservers.
type fakeCloudflare struct {
	token string
	zone  string // without the final dot
	dns   *challtestsrv

	mu      sync.Mutex // guards the following
	records map[string]cfRecord
	nextID  int
	calls   []string // "METHOD path" of each authorised call
	refused int      // calls without the right token
}

// cfRecord is a DNS record as the API shows it: Name absolute without the
// final dot, TXT Content in double quotes.
type cfRecord struct {
	ID      string `json:"id"`
	Type    string `json:"type"`
	Name    string `json:"name"`
	Content string `json:"content"`
	TTL     int    `json:"ttl"`
	ZoneID  string `json:"zone_id"`
}

// fakeZoneID is a zone identifier of the form Cloudflare uses.
const fakeZoneID = "023e105f4ecef8ad9ca31a8372d0c353"

func (f *fakeCloudflare) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+f.token {
		f.mu.Lock()
		f.refused++
		f.mu.Unlock()
		cfError(w, http.StatusForbidden, 10000, "Authentication error")
		return
	}
	f.mu.Lock()
	f.calls = append(f.calls, r.Method+" "+r.URL.Path)
	f.mu.Unlock()
	const prefix = "/client/v4/zones"
	path, ok := strings.CutPrefix(r.URL.Path, prefix)
	switch {
	case !ok:
		cfError(w, http.StatusNotFound, 7003, "no route for "+r.URL.Path)
	case path == "" && r.Method == http.MethodGet:
		f.zones(w, r)
	case path == "/"+fakeZoneID+"/dns_records" && r.Method == http.MethodPost:
		f.create(w, r)
	case path == "/"+fakeZoneID+"/dns_records" && r.Method == http.MethodGet:
		f.list(w, r)
	case strings.HasPrefix(path, "/"+fakeZoneID+"/dns_records/") && r.Method == http.MethodDelete:
		f.delete(w, strings.TrimPrefix(path, "/"+fakeZoneID+"/dns_records/"))
	default:
		cfError(w, http.StatusNotFound, 7003, "no route for "+r.Method+" "+r.URL.Path)
	}
}

func (f *fakeCloudflare) zones(w http.ResponseWriter, r *http.Request) {
	zones := []map[string]string{}
	if name := strings.TrimSuffix(r.URL.Query().Get("name"), "."); strings.EqualFold(name, f.zone) {
		zones = append(zones, map[string]string{"id": fakeZoneID, "name": f.zone, "status": "active"})
	}
	cfResult(w, zones)
}

func (f *fakeCloudflare) create(w http.ResponseWriter, r *http.Request) {
	var rec cfRecord
	if err := json.NewDecoder(io.LimitReader(r.Body, bodyLimit)).Decode(&rec); err != nil {
		cfError(w, http.StatusBadRequest, 9207, "request body is invalid JSON: "+err.Error())
		return
	}
	if rec.Type != "TXT" {
		cfError(w, http.StatusBadRequest, 9000, "the fake takes TXT records only, not "+rec.Type)
		return
	}
	// Cloudflare takes names relative to the zone or absolute.
	rec.Name = strings.ToLower(strings.TrimSuffix(rec.Name, "."))
	if rec.Name != f.zone && !strings.HasSuffix(rec.Name, "."+f.zone) {
		rec.Name += "." + f.zone
	}
	if err := f.dns.setTXT(rec.Name+".", strings.Trim(rec.Content, `"`)); err != nil {
		cfError(w, http.StatusInternalServerError, 1000, err.Error())
		return
	}
	f.mu.Lock()
	f.nextID++
	rec.ID = fmt.Sprintf("%032x", f.nextID)
	rec.ZoneID = fakeZoneID
	f.records[rec.ID] = rec
	f.mu.Unlock()
	cfResult(w, rec)
}

func (f *fakeCloudflare) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	name := strings.ToLower(strings.TrimSuffix(q.Get("name"), "."))
	f.mu.Lock()
	found := []cfRecord{}
	for _, rec := range f.records {
		if (q.Get("type") == "" || rec.Type == q.Get("type")) &&
			(name == "" || rec.Name == name) &&
			strings.Contains(rec.Content, q.Get("content.contains")) {
			found = append(found, rec)
		}
	}
	f.mu.Unlock()
	cfResult(w, found)
}

func (f *fakeCloudflare) delete(w http.ResponseWriter, id string) {
	f.mu.Lock()
	rec, ok := f.records[id]
	delete(f.records, id)
	f.mu.Unlock()
	if !ok {
		cfError(w, http.StatusNotFound, 81044, "Record does not exist.")
		return
	}
	// challtestsrv clears every TXT record of the name; the test has one
	// challenge at a time.
	if err := f.dns.clearTXT(rec.Name + "."); err != nil {
		cfError(w, http.StatusInternalServerError, 1000, err.Error())
		return
	}
	cfResult(w, rec)
}

// seen returns how many authorised calls matched method and a path suffix,
// and how many calls were refused for their token.
func (f *fakeCloudflare) seen(method, suffix string) (matched, refused int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.calls {
		m, p, _ := strings.Cut(c, " ")
		if m == method && strings.Contains(p, suffix) {
			matched++
		}
	}
	return matched, f.refused
}

// cfResult and cfError write Cloudflare's response envelope.
func cfResult(w http.ResponseWriter, result any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"success": true, "errors": []any{}, "messages": []any{}, "result": result})
}

func cfError(w http.ResponseWriter, status, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"success": false, "errors": []any{map[string]any{"code": code, "message": msg}}})
}

// startFakeCloudflare serves the fake API over TLS with a certificate of
// the test's CA for api.cloudflare.com, behind an HTTP CONNECT proxy: Caddy
// gets HTTPS_PROXY set to the returned proxy URL and SSL_CERT_FILE set to
// the CA, and so reaches the fake at Cloudflare's constant URL.
func startFakeCloudflare(t *testing.T, ca *sptest.CA, api *fakeCloudflare) (proxyURL string) {
	t.Helper()
	api.records = map[string]cfRecord{}
	srv := httptest.NewUnstartedServer(api)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.Leaf(t, "api.cloudflare.com")}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return startConnectProxy(t, cloudflareAPIHost, srv.Listener.Addr().String())
}

// startConnectProxy accepts CONNECT requests for host only and joins each
// to backend; anything else gets 403, so a request that escapes to another
// host shows up as an error rather than a hang.
func startConnectProxy(t *testing.T, host, backend string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex // guards conns
	conns := map[net.Conn]bool{}
	track := func(c net.Conn, open bool) {
		mu.Lock()
		defer mu.Unlock()
		if open {
			conns[c] = true
		} else {
			delete(conns, c)
		}
	}
	// The accept loop and each tunnel's goroutines are the proxy's;
	// closing the listener and every tracked connection stops them.
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			track(c, true)
			wg.Go(func() {
				defer func() { c.Close(); track(c, false) }()
				tunnel(c, host, backend, track)
			})
		}
	})
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return "http://" + l.Addr().String()
}

// tunnel serves one CONNECT request on c.
func tunnel(c net.Conn, host, backend string, track func(net.Conn, bool)) {
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	if req.Method != http.MethodConnect || req.Host != host {
		io.WriteString(c, "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
		return
	}
	b, err := net.Dial("tcp", backend)
	if err != nil {
		io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
		return
	}
	track(b, true)
	defer func() { b.Close(); track(b, false) }()
	io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(b, br) // br holds anything the client sent after CONNECT
		b.(*net.TCPConn).CloseWrite()
	}()
	io.Copy(c, b)
	c.Close()
	<-done
}
