package ingest

import (
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/sluice-metrics/sluice/aggregate"
)

// status serves /api/v1/status in the Pushgateway's shape.
func (s *server) status(c *fiber.Ctx) error {
	cors(c)
	c.Status(fiber.StatusOK)
	return c.JSON(fiber.Map{
		"status": "success",
		"data": fiber.Map{
			"build_information": s.opts.Status.BuildInformation,
			"flags":             s.opts.Status.Flags,
			"start_time":        s.opts.Status.StartTime.Format(time.RFC3339Nano),
		},
	})
}

// apiMetrics serves /api/v1/metrics in the Pushgateway's shape: one object
// per group with its labels, last_push_successful, and one entry per metric
// family (all numbers as strings). Sluice adds "clear_modes" per family.
func (s *server) apiMetrics(c *fiber.Ctx) error {
	cors(c)
	groups := s.opts.Aggregator.Groups()
	data := make([]map[string]any, 0, len(groups))
	for _, g := range groups {
		obj := map[string]any{
			"labels":               labelMap(g.Labels),
			"last_push_successful": !g.LastFailure.After(g.LastPush),
		}
		for _, f := range g.Families {
			obj[f.Family.GetName()] = familyJSON(f.Family, f.LastPush, f.Modes)
		}
		gl := labelMap(g.Labels)
		if _, ok := gl["instance"]; !ok {
			gl["instance"] = ""
		}
		obj["push_time_seconds"] = timeFamilyJSON(gl, g.LastPush, g.LastPush,
			"Last Unix time when changing this group in Sluice succeeded.")
		obj["push_failure_time_seconds"] = timeFamilyJSON(gl, g.LastFailure, g.LastPush,
			"Last Unix time when changing this group in Sluice failed.")
		data = append(data, obj)
	}
	c.Status(fiber.StatusOK)
	return c.JSON(fiber.Map{"status": "success", "data": data})
}

func labelMap(ls labels.Labels) map[string]string {
	m := make(map[string]string, ls.Len())
	ls.Range(func(l labels.Label) { m[l.Name] = l.Value })
	return m
}

func timeFamilyJSON(ls map[string]string, t, pushed time.Time, help string) map[string]any {
	v := 0.0
	if !t.IsZero() {
		v = float64(t.UnixNano()) / 1e9
	}
	return map[string]any{
		"time_stamp": pushed.Format(time.RFC3339Nano),
		"type":       "GAUGE",
		"help":       help,
		"metrics":    []map[string]any{{"labels": ls, "value": fmtFloat(v)}},
	}
}

func familyJSON(f *dto.MetricFamily, pushed time.Time, modes []string) map[string]any {
	out := map[string]any{
		"time_stamp":  pushed.Format(time.RFC3339Nano),
		"type":        f.GetType().String(),
		"clear_modes": modes,
	}
	if f.Help != nil {
		out["help"] = f.GetHelp()
	}
	metrics := make([]map[string]any, 0, len(f.GetMetric()))
	for _, m := range f.GetMetric() {
		ls := make(map[string]string, len(m.GetLabel())+1)
		for _, lp := range m.GetLabel() {
			ls[lp.GetName()] = lp.GetValue()
		}
		e := map[string]any{"labels": ls}
		switch {
		case m.Counter != nil:
			e["value"] = fmtFloat(m.Counter.GetValue())
		case m.Gauge != nil:
			e["value"] = fmtFloat(m.Gauge.GetValue())
		case m.Untyped != nil:
			e["value"] = fmtFloat(m.Untyped.GetValue())
		case m.Summary != nil:
			q := map[string]string{}
			for _, qq := range m.Summary.GetQuantile() {
				q[fmtFloat(qq.GetQuantile())] = fmtFloat(qq.GetValue())
			}
			e["quantiles"] = q
			e["count"] = strconv.FormatUint(m.Summary.GetSampleCount(), 10)
			e["sum"] = fmtFloat(m.Summary.GetSampleSum())
		case m.Histogram != nil && (len(m.Histogram.GetPositiveSpan()) > 0 || len(m.Histogram.GetNegativeSpan()) > 0):
			// A native histogram: its buckets as the Prometheus HTTP API
			// (and the Pushgateway's, since 1.8) list them:
			// [boundaries, lower, upper, count], boundaries 0 for (a,b],
			// 1 for [a,b), 2 for (a,b), 3 for [a,b].
			fh := aggregate.NativeHistogram(m.Histogram)
			var buckets [][4]any
			for it := fh.AllBucketIterator(); it.Next(); {
				b := it.At()
				if b.Count == 0 {
					continue
				}
				bounds := 2
				switch {
				case b.LowerInclusive && b.UpperInclusive:
					bounds = 3
				case b.LowerInclusive:
					bounds = 1
				case b.UpperInclusive:
					bounds = 0
				}
				buckets = append(buckets, [4]any{bounds, fmtFloat(b.Lower), fmtFloat(b.Upper), fmtFloat(b.Count)})
			}
			if buckets == nil {
				buckets = [][4]any{}
			}
			e["buckets"] = buckets
			e["count"] = fmtFloat(fh.Count)
			e["sum"] = fmtFloat(fh.Sum)
		case m.Histogram != nil:
			h := m.Histogram
			b := map[string]string{}
			for _, bb := range h.GetBucket() {
				c := float64(bb.GetCumulativeCount())
				if bb.CumulativeCountFloat != nil {
					c = bb.GetCumulativeCountFloat()
				}
				b[fmtFloat(bb.GetUpperBound())] = fmtFloat(c)
			}
			count := float64(h.GetSampleCount())
			if h.SampleCountFloat != nil {
				count = h.GetSampleCountFloat()
			}
			b["+Inf"] = fmtFloat(count)
			e["buckets"] = b
			e["count"] = fmtFloat(count)
			e["sum"] = fmtFloat(h.GetSampleSum())
		}
		metrics = append(metrics, e)
	}
	out["metrics"] = metrics
	return out
}

func fmtFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }
