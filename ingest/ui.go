package ingest

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"fmt"
	"html/template"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/sluice-metrics/sluice/aggregate"
)

// TargetInfo is one forward target's state as the web page shows it.
// cmd/proxy fills it from forward.TargetStatus; ingest does not import
// forward. URL must already be free of credentials and query.
type TargetInfo struct {
	Name            string
	URL             string
	ProtobufMessage string
	Shards          int
	QueuedSamples   int64
	BacklogBytes    int64
	LastSend        time.Time // zero if never
	LastError       string    // the most recent send error, kept after later successes
	LastErrorTime   time.Time
}

// uiFiles is read-only: the page's template, script and style sheet.
//
//go:embed ui/index.html ui/ui.css ui/ui.js
var uiFiles embed.FS

// uiPage renders GET /: the page is built on the server with html/template
// (every value is escaped for its context), so it works without
// JavaScript except for the delete buttons. The script and the style sheet
// are inlined and allowed by hash in the Content-Security-Policy, so the
// page needs no other request and runs no other script.
type uiPage struct {
	tmpl *template.Template
	js   template.JS
	css  template.CSS
	csp  string
}

func newUIPage() (*uiPage, error) {
	js, err := uiFiles.ReadFile("ui/ui.js")
	if err != nil {
		return nil, fmt.Errorf("read ui.js: %w", err)
	}
	css, err := uiFiles.ReadFile("ui/ui.css")
	if err != nil {
		return nil, fmt.Errorf("read ui.css: %w", err)
	}
	tmpl, err := template.New("index.html").ParseFS(uiFiles, "ui/index.html")
	if err != nil {
		return nil, fmt.Errorf("parse index.html: %w", err)
	}
	return &uiPage{
		tmpl: tmpl,
		// Trusted as is: our own embedded files, never input.
		js:  template.JS(js),
		css: template.CSS(css),
		csp: "default-src 'none'; script-src " + cspHash(js) + "; style-src " + cspHash(css) +
			"; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
	}, nil
}

func cspHash(b []byte) string {
	h := sha256.Sum256(b)
	return "'sha256-" + base64.StdEncoding.EncodeToString(h[:]) + "'"
}

// uiData is what index.html renders.
type uiData struct {
	Version string
	Started string
	Now     string
	JS      template.JS
	CSS     template.CSS
	Groups  []uiGroup
	// TargetsKnown is false when the process did not wire target state in.
	TargetsKnown bool
	Targets      []uiTarget
}

type uiGroup struct {
	ID          string // unique within the page
	Labels      []labels.Label
	Key         string // {job="a", x="b"}, for the confirmation question
	DeletePath  string // relative to the page
	LastPush    uiTime
	LastFailure uiTime
	Failed      bool // the last change to the group was rejected
	Series      int
	Families    []uiFamily
}

type uiFamily struct {
	Name     string
	Type     string
	Help     string
	Modes    string
	LastPush uiTime
	Series   []uiSeries
}

type uiSeries struct {
	Labels string // {a="b", ...}
	Value  string // counters, gauges, untyped; else empty
	Parts  []uiPart
}

// uiPart is one row of a histogram or summary: a bucket, a quantile, the
// count or the sum.
type uiPart struct{ Name, Value string }

type uiTime struct {
	Text    string // UTC, to the second; "never" if zero
	Seconds string // push_time_seconds style Unix seconds; "0" if zero
}

type uiTarget struct {
	TargetInfo
	State       string // ok, failing, waiting
	Backlog     string
	LastSendAt  uiTime
	LastErrorAt uiTime
}

const uiTimeLayout = "2006-01-02 15:04:05 UTC"

func newUITime(t time.Time) uiTime {
	if t.IsZero() {
		return uiTime{Text: "never", Seconds: "0"}
	}
	return uiTime{
		Text:    t.UTC().Format(uiTimeLayout),
		Seconds: fmtFloat(float64(t.UnixNano()) / 1e9),
	}
}

// homeHandler serves the web page on GET /. The template is parsed once
// here; it is embedded, so a parse error is a bug that the tests catch,
// answered with 500 rather than a failed start.
func homeHandler(s *server) fiber.Handler {
	ui, err := newUIPage()
	if err != nil {
		s.opts.Logger.Error("web page unavailable", "err", err)
		return func(c *fiber.Ctx) error {
			return fiber.NewError(fiber.StatusInternalServerError, "web page unavailable: "+err.Error())
		}
	}
	return func(c *fiber.Ctx) error { return ui.serve(c, s.opts) }
}

func (ui *uiPage) serve(c *fiber.Ctx, opts Options) error {
	d := uiData{
		Version: opts.Status.BuildInformation["version"],
		Now:     time.Now().UTC().Format(uiTimeLayout),
		JS:      ui.js,
		CSS:     ui.css,
	}
	if !opts.Status.StartTime.IsZero() {
		d.Started = opts.Status.StartTime.UTC().Format(uiTimeLayout)
	}
	for i, g := range opts.Aggregator.Groups() {
		d.Groups = append(d.Groups, uiGroupOf(i, g))
	}
	if opts.Targets != nil {
		d.TargetsKnown = true
		for _, t := range opts.Targets() {
			d.Targets = append(d.Targets, uiTargetOf(t))
		}
	}
	var buf bytes.Buffer
	if err := ui.tmpl.Execute(&buf, d); err != nil {
		opts.Logger.Error("render web page", "err", err)
		return fiber.NewError(fiber.StatusInternalServerError, "render web page: "+err.Error())
	}
	c.Set(fiber.HeaderContentType, fiber.MIMETextHTMLCharsetUTF8)
	c.Set(fiber.HeaderContentSecurityPolicy, ui.csp)
	c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	c.Set(fiber.HeaderReferrerPolicy, "no-referrer")
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.Send(buf.Bytes())
}

func uiGroupOf(i int, g aggregate.GroupSnapshot) uiGroup {
	u := uiGroup{
		ID:          "g" + strconv.Itoa(i),
		Key:         g.Labels.String(),
		DeletePath:  deletePath(g.Labels),
		LastPush:    newUITime(g.LastPush),
		LastFailure: newUITime(g.LastFailure),
		Failed:      g.LastFailure.After(g.LastPush),
	}
	g.Labels.Range(func(l labels.Label) { u.Labels = append(u.Labels, l) })
	for _, f := range g.Families {
		uf := uiFamily{
			Name:     f.Family.GetName(),
			Type:     strings.ToLower(f.Family.GetType().String()),
			Help:     f.Family.GetHelp(),
			Modes:    strings.Join(f.Modes, ", "),
			LastPush: newUITime(f.LastPush),
		}
		for _, m := range f.Family.GetMetric() {
			uf.Series = append(uf.Series, uiSeriesOf(m))
		}
		u.Series += len(uf.Series)
		u.Families = append(u.Families, uf)
	}
	return u
}

func uiSeriesOf(m *dto.Metric) uiSeries {
	var b strings.Builder
	b.WriteByte('{')
	for i, lp := range m.GetLabel() {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(lp.GetName())
		b.WriteString("=")
		b.WriteString(strconv.Quote(lp.GetValue()))
	}
	b.WriteByte('}')
	s := uiSeries{Labels: b.String()}
	switch {
	case m.Counter != nil:
		s.Value = fmtFloat(m.Counter.GetValue())
	case m.Gauge != nil:
		s.Value = fmtFloat(m.Gauge.GetValue())
	case m.Untyped != nil:
		s.Value = fmtFloat(m.Untyped.GetValue())
	case m.Summary != nil:
		for _, q := range m.Summary.GetQuantile() {
			s.Parts = append(s.Parts, uiPart{"quantile " + fmtFloat(q.GetQuantile()), fmtFloat(q.GetValue())})
		}
		s.Parts = append(s.Parts,
			uiPart{"count", strconv.FormatUint(m.Summary.GetSampleCount(), 10)},
			uiPart{"sum", fmtFloat(m.Summary.GetSampleSum())})
	case m.Histogram != nil:
		h := m.Histogram
		for _, bk := range h.GetBucket() {
			c := float64(bk.GetCumulativeCount())
			if bk.CumulativeCountFloat != nil {
				c = bk.GetCumulativeCountFloat()
			}
			s.Parts = append(s.Parts, uiPart{"le " + fmtFloat(bk.GetUpperBound()), fmtFloat(c)})
		}
		count := float64(h.GetSampleCount())
		if h.SampleCountFloat != nil {
			count = h.GetSampleCountFloat()
		}
		if len(h.GetPositiveSpan())+len(h.GetNegativeSpan()) > 0 || h.GetZeroThreshold() > 0 {
			s.Parts = append(s.Parts, uiPart{"native schema", strconv.Itoa(int(h.GetSchema()))})
		}
		s.Parts = append(s.Parts, uiPart{"count", fmtFloat(count)}, uiPart{"sum", fmtFloat(h.GetSampleSum())})
	}
	return s
}

func uiTargetOf(t TargetInfo) uiTarget {
	u := uiTarget{
		TargetInfo:  t,
		Backlog:     fmtBytes(t.BacklogBytes),
		LastSendAt:  newUITime(t.LastSend),
		LastErrorAt: newUITime(t.LastErrorTime),
	}
	switch {
	case t.LastError != "" && !t.LastErrorTime.Before(t.LastSend):
		u.State = "failing"
	case !t.LastSend.IsZero():
		u.State = "ok"
	default:
		u.State = "waiting" // nothing sent yet, no error either
	}
	return u
}

func fmtBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return strconv.FormatFloat(float64(n)/float64(div), 'f', 1, 64) + " " + string("KMGTP"[exp]) + "iB"
}

// deletePath is the push-API path that deletes the group, relative to the
// page (so a prefix in front of Sluice keeps working): job first, then the
// other labels in order. A value goes as <name>@base64/<base64url> when it
// contains '/' (which would split the path), is empty (an empty segment
// would be lost), or is "." or ".." (browsers resolve those as dot
// segments); else percent-encoded as is, as client_golang's push does. The
// group without labels (a push to /metrics itself) is deleted on
// "metrics/".
func deletePath(ls labels.Labels) string {
	if ls.IsEmpty() {
		return "metrics/"
	}
	var b strings.Builder
	b.WriteString("metrics")
	seg := func(name, value string) {
		b.WriteByte('/')
		if value == "" || value == "." || value == ".." || strings.Contains(value, "/") {
			b.WriteString(name)
			b.WriteString(base64Suffix + "/")
			if value == "" {
				b.WriteString("=") // the empty value; raw base64 of "" is nothing
				return
			}
			b.WriteString(base64.RawURLEncoding.EncodeToString([]byte(value)))
			return
		}
		b.WriteString(name)
		b.WriteByte('/')
		b.WriteString(url.PathEscape(value))
	}
	if job := ls.Get("job"); job != "" {
		seg("job", job)
	}
	ls.Range(func(l labels.Label) {
		if l.Name != "job" {
			seg(l.Name, l.Value)
		}
	})
	return b.String()
}
