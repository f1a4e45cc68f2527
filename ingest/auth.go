package ingest

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"golang.org/x/crypto/bcrypt"

	"github.com/sluice-metrics/sluice/configs"
)

// endpointClass groups the endpoints by who may use them.
type endpointClass uint8

const (
	// classOpen needs no credentials ever: health checks (load balancers
	// and orchestrators probe them) and CORS preflights (browsers send
	// them without credentials).
	classOpen endpointClass = iota
	// classPush is the push API (PUT, POST, DELETE /metrics...).
	classPush
	// classRemoteWrite is POST /api/v1/write.
	classRemoteWrite
	// classRead is GET /metrics, the UI and the read-only /api/v1/*
	// (web.protect_metrics).
	classRead
	// classAdmin is /api/v1/admin/*, /-/reload and /-/quit
	// (web.protect_admin).
	classAdmin
)

// classify tells which class a request is in. It sees the raw path, as
// fiber's router does (the routes are case sensitive and strict).
func classify(method, path string) endpointClass {
	switch {
	case method == fiber.MethodOptions, path == "/-/healthy", path == "/-/ready":
		return classOpen
	case path == "/api/v1/write":
		return classRemoteWrite
	case path == "/metrics" && (method == fiber.MethodGet || method == fiber.MethodHead):
		return classRead
	case path == "/metrics" || strings.HasPrefix(path, "/metrics/"):
		return classPush
	case path == "/-/reload", path == "/-/quit", strings.HasPrefix(path, "/api/v1/admin/"):
		return classAdmin
	}
	return classRead
}

// authResult is the outcome of checking a request's credentials.
type authResult uint8

const (
	authOK authResult = iota
	authMissing
	authInvalid
)

// authCacheSize bounds the remembered outcomes of bcrypt comparisons. A
// fleet of pushers shares a few credentials, so a few hundred entries
// keep every valid push at one SHA-256 instead of one bcrypt (~50 ms).
const authCacheSize = 1024

// authenticator checks credentials against one web config. A new one is
// built when the config is reloaded.
type authenticator struct {
	cfg *configs.WebConfig
	// users are the basic auth users; names are compared in constant
	// time by their SHA-256.
	users []basicUser
	// tokens are the SHA-256 of the accepted bearer tokens: comparing
	// digests takes the same time whatever the length of the guess.
	tokens [][sha256.Size]byte
	// challenge is the WWW-Authenticate value of a 401.
	challenge string

	// bcryptMu serialises bcrypt comparisons, so that a flood of wrong
	// passwords costs at most one core (as in exporter-toolkit).
	bcryptMu sync.Mutex
	// mu guards cache.
	mu sync.Mutex
	// cache maps SHA-256(user, 0, password) to the outcome of its bcrypt
	// comparison. Failures are cached too: a misconfigured client
	// retrying the same wrong password costs a hash, not a bcrypt.
	cache map[[sha256.Size]byte]bool
	// cacheSize bounds cache (authCacheSize).
	cacheSize int
}

type basicUser struct {
	name [sha256.Size]byte
	hash []byte
}

// dummyBcryptHash is what an unknown user's password is compared with, so
// that an unknown user costs as much as a wrong password (exporter-toolkit
// does the same). It matches no password.
const dummyBcryptHash = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi"

func newAuthenticator(cfg *configs.WebConfig) *authenticator {
	a := &authenticator{cfg: cfg, cache: make(map[[sha256.Size]byte]bool), cacheSize: authCacheSize}
	for name, hash := range cfg.BasicAuthUsers {
		a.users = append(a.users, basicUser{name: sha256.Sum256([]byte(name)), hash: []byte(hash)})
	}
	for _, t := range cfg.BearerTokens {
		a.tokens = append(a.tokens, sha256.Sum256([]byte(t.Value())))
	}
	var ch []string
	if len(a.users) > 0 {
		ch = append(ch, `Basic realm="sluice"`)
	}
	if len(a.tokens) > 0 {
		ch = append(ch, `Bearer realm="sluice"`)
	}
	a.challenge = strings.Join(ch, ", ")
	return a
}

// required reports whether requests of class cls must carry credentials.
func (a *authenticator) required(cls endpointClass) bool {
	if !a.cfg.AuthEnabled() {
		return false
	}
	switch cls {
	case classPush, classRemoteWrite:
		return true
	case classRead:
		return a.cfg.ProtectMetrics
	case classAdmin:
		return a.cfg.ProtectAdmin
	}
	return false
}

// check verifies an Authorization header value.
func (a *authenticator) check(header string) authResult {
	scheme, cred, ok := strings.Cut(header, " ")
	if !ok || header == "" {
		return authMissing
	}
	cred = strings.TrimSpace(cred)
	switch {
	case strings.EqualFold(scheme, "Basic") && len(a.users) > 0:
		raw, err := base64.StdEncoding.DecodeString(cred)
		if err != nil {
			return authInvalid
		}
		user, pass, ok := strings.Cut(string(raw), ":")
		if !ok {
			return authInvalid
		}
		if a.checkBasic(user, pass) {
			return authOK
		}
		return authInvalid
	case strings.EqualFold(scheme, "Bearer") && len(a.tokens) > 0:
		sum := sha256.Sum256([]byte(cred))
		match := 0
		for i := range a.tokens {
			// No early exit: the time taken does not say which token (or
			// how many) there are.
			match |= subtle.ConstantTimeCompare(sum[:], a.tokens[i][:])
		}
		if match == 1 {
			return authOK
		}
		return authInvalid
	}
	return authInvalid
}

func (a *authenticator) checkBasic(user, pass string) bool {
	h := sha256.New()
	h.Write([]byte(user))
	h.Write([]byte{0})
	h.Write([]byte(pass))
	var key [sha256.Size]byte
	h.Sum(key[:0])

	a.mu.Lock()
	ok, cached := a.cache[key]
	a.mu.Unlock()
	if cached {
		return ok
	}

	name := sha256.Sum256([]byte(user))
	hash := []byte(dummyBcryptHash)
	known := 0
	for i := range a.users {
		eq := subtle.ConstantTimeCompare(name[:], a.users[i].name[:])
		if eq == 1 {
			hash = a.users[i].hash
		}
		known |= eq
	}
	a.bcryptMu.Lock()
	err := bcrypt.CompareHashAndPassword(hash, []byte(pass))
	a.bcryptMu.Unlock()
	ok = known == 1 && err == nil

	a.mu.Lock()
	if len(a.cache) >= a.cacheSize {
		for k := range a.cache { // evict one at random (map order)
			delete(a.cache, k)
			break
		}
	}
	a.cache[key] = ok
	a.mu.Unlock()
	return ok
}

// authMetrics counts rejected credentials.
type authMetrics struct {
	failures *prometheus.CounterVec
}

func newAuthMetrics(reg prometheus.Registerer) *authMetrics {
	m := &authMetrics{failures: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_auth_failures_total",
		Help: "Requests answered 401, by reason: missing (no or unusable Authorization header) or invalid (wrong credentials).",
	}, []string{"reason"})}
	m.failures.WithLabelValues("missing")
	m.failures.WithLabelValues("invalid")
	reg.MustRegister(m.failures)
	return m
}

// authState holds the authenticator of the web config in force.
type authState struct {
	cfg func() *configs.WebConfig
	// mu guards cur.
	mu  sync.Mutex
	cur *authenticator
}

// web returns the web config in force.
func (s *authState) web() *configs.WebConfig { return s.cfg() }

// get returns the authenticator for the config in force, building a new
// one (with an empty cache) when the config was reloaded.
func (s *authState) get() *authenticator {
	cfg := s.cfg()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil || s.cur.cfg != cfg {
		s.cur = newAuthenticator(cfg)
	}
	return s.cur
}

// guard runs before every handler: it answers 401 to a request without
// valid credentials where they are required, and admits push and
// remote_write requests only while fewer than the in-flight limit run.
func (s *server) guard(c *fiber.Ctx) error {
	if s.unread.Len() > 0 {
		s.unread.forget(&c.Request().Header) // its body was read after all (none)
	}
	cls := classify(c.Method(), c.Path())
	if a := s.auth.get(); a.required(cls) {
		if res := a.check(c.Get(fiber.HeaderAuthorization)); res != authOK {
			return s.unauthorized(c, a, cls, res)
		}
	}
	if cls == classPush || cls == classRemoteWrite {
		return s.admit(c, cls)
	}
	return c.Next()
}

// unauthorized answers 401 and closes the connection, so that whatever
// body the client still sends is never read.
func (s *server) unauthorized(c *fiber.Ctx, a *authenticator, cls endpointClass, res authResult) error {
	return s.unauthorizedFor(c, a, cls, res, c.Get(fiber.HeaderContentType))
}

// unauthorizedFor is unauthorized for a request of that Content-Type.
func (s *server) unauthorizedFor(c *fiber.Ctx, a *authenticator, cls endpointClass, res authResult, contentType string) error {
	reason, what := "invalid", "invalid credentials"
	if res == authMissing {
		reason, what = "missing", "no credentials"
	}
	s.authm.failures.WithLabelValues(reason).Inc()
	c.Context().SetConnectionClose()
	c.Set(fiber.HeaderWWWAuthenticate, a.challenge)
	c.Set(fiber.HeaderContentType, fiber.MIMETextPlainCharsetUTF8)
	if cls == classRemoteWrite {
		if v, _ := rwVersionOf(contentType); v == rwV2 {
			c.Set(headerSamplesWritten, "0")
			c.Set(headerHistogramsWritten, "0")
			c.Set(headerExemplarsWritten, "0")
		}
	}
	return c.Status(http.StatusUnauthorized).SendString("unauthorized: " + what +
		" (Authorization: Basic for web.basic_auth_users, or Bearer for web.bearer_tokens)\n")
}

// headerReceived runs once a request's headers are read, before its body
// is. A request that needs credentials and lacks valid ones gets a body
// limit of one byte: fasthttp then refuses the body unread (at once for a
// Content-Length, after the first chunk for a chunked body) and the error
// handler answers 401 and closes the connection. Requests with valid
// credentials, or needing none, keep the server's limits.
func (s *server) headerReceived(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
	if s.unread.Len() > 0 {
		// A request refused before on this header (fasthttp reuses them)
		// whose body read ended without the error handler (the client
		// went away, a bad chunk): its entry must not answer this one.
		s.unread.forget(h)
	}
	a := s.auth.get()
	if !a.cfg.AuthEnabled() {
		return fasthttp.RequestConfig{}
	}
	uri := fasthttp.AcquireURI()
	defer fasthttp.ReleaseURI(uri)
	if err := uri.Parse(h.Host(), h.RequestURI()); err != nil {
		return fasthttp.RequestConfig{}
	}
	cls := classify(string(h.Method()), string(uri.PathOriginal()))
	if !a.required(cls) {
		return fasthttp.RequestConfig{}
	}
	res := a.check(string(h.Peek(fiber.HeaderAuthorization)))
	if res == authOK {
		return fasthttp.RequestConfig{}
	}
	// fasthttp empties the request when its body fails to read, as it
	// will here for a chunked one, before the error handler runs: keep
	// what the 401 needs.
	s.unread.keep(h, unreadRequest{cls: cls, res: res, contentType: string(h.ContentType())})
	return fasthttp.RequestConfig{MaxRequestBodySize: 1}
}

// maxUnread bounds unreadRequests: requests are taken within
// milliseconds, so more than this at once are mostly abandoned ones.
const maxUnread = 1024

// unreadRequest is what the 401 for a request refused unread needs.
type unreadRequest struct {
	cls         endpointClass
	res         authResult
	contentType string
}

// unreadRequests are the requests headerReceived refused, by their
// header (which fasthttp keeps, emptied, when the body fails to read),
// until the error handler (or, for a request whose body was read after
// all, guard) takes them. Only refused requests are kept, so it stays
// small.
type unreadRequests struct {
	mu sync.Mutex
	m  map[*fasthttp.RequestHeader]unreadRequest
	n  atomic.Int64
}

func (u *unreadRequests) keep(h *fasthttp.RequestHeader, r unreadRequest) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m == nil || len(u.m) >= maxUnread {
		// Entries whose request was dropped without an answer (the
		// client went away mid-body) are not taken: a bound keeps them
		// from piling up. A request refused meanwhile gets 413, not 401.
		u.m = make(map[*fasthttp.RequestHeader]unreadRequest)
	}
	u.m[h] = r
	u.n.Store(int64(len(u.m)))
}

func (u *unreadRequests) take(h *fasthttp.RequestHeader) (unreadRequest, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	r, ok := u.m[h]
	delete(u.m, h)
	u.n.Store(int64(len(u.m)))
	return r, ok
}

func (u *unreadRequests) forget(h *fasthttp.RequestHeader) { u.take(h) }

// Len is how many are kept; cheap, for the common case of none.
func (u *unreadRequests) Len() int64 { return u.n.Load() }

// rejectedUnread reports whether fiber's 413 for c comes from
// headerReceived (missing or invalid credentials) rather than from a body
// over limits.max_body_bytes; if so it answers 401.
func (s *server) rejectedUnread(c *fiber.Ctx) (bool, error) {
	if r, ok := s.unread.take(&c.Request().Header); ok {
		return true, s.unauthorizedFor(c, s.auth.get(), r.cls, r.res, r.contentType)
	}
	a := s.auth.get()
	cls := classify(c.Method(), c.Path())
	if !a.required(cls) {
		return false, nil
	}
	res := a.check(c.Get(fiber.HeaderAuthorization))
	if res == authOK {
		return false, nil
	}
	return true, s.unauthorized(c, a, cls, res)
}
