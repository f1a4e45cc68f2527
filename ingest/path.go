package ingest

import (
	"encoding/base64"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
)

// base64Suffix marks a path label whose value is base64url-encoded.
const base64Suffix = "@base64"

// ParseGroupingKey parses the part of a push path after "/metrics" (still
// percent-encoded, e.g. "/job/f/env/prod") into the grouping key.
//
// As on the Pushgateway, percent-decoding happens before the path is split,
// so "%2F" separates segments and a "/" inside a value needs @base64; "+"
// stays a literal plus. A path starting with job or job@base64 is a
// Pushgateway push and needs a non-empty job; any other path is a
// Gravel-style push whose pairs are the whole key.
func ParseGroupingKey(rawPath string) (labels.Labels, error) {
	p, err := url.PathUnescape(rawPath)
	if err != nil {
		return labels.EmptyLabels(), fmt.Errorf("invalid percent-encoding in path %q", rawPath)
	}
	p = strings.TrimPrefix(p, "/")
	if p == "" {
		return labels.EmptyLabels(), nil
	}
	// The segments and pairs of a usual path fit in these arrays, on the
	// stack: parsing a push's path allocates only its label set.
	var segArr [16]string
	segs := splitSegments(segArr[:0], p)
	if len(segs)%2 == 1 && segs[len(segs)-1] == "" {
		segs = segs[:len(segs)-1] // a trailing slash after complete pairs
	}
	var pairArr [8]labels.Label
	pairs := pairArr[:0]
	rest := segs
	job, hasJob := "", false
	if segs[0] == "job" || segs[0] == "job"+base64Suffix {
		hasJob = true
		if len(segs) < 2 || segs[1] == "" {
			return labels.EmptyLabels(), fmt.Errorf("job name is required")
		}
		job = segs[1]
		if segs[0] != "job" {
			v, err := decodeBase64(job)
			if err != nil {
				return labels.EmptyLabels(), fmt.Errorf("invalid base64 encoding in job name %q: %w", job, err)
			}
			if v == "" {
				return labels.EmptyLabels(), fmt.Errorf("job name is required")
			}
			job = v
		}
		if !utf8.ValidString(job) {
			return labels.EmptyLabels(), fmt.Errorf("job name is not valid UTF-8")
		}
		rest = segs[2:]
	}
	if len(rest)%2 != 0 {
		return labels.EmptyLabels(), fmt.Errorf("odd number of components in label string %q", "/"+strings.Join(rest, "/"))
	}
	for i := 0; i < len(rest); i += 2 {
		name, value := rest[i], rest[i+1]
		if n, ok := strings.CutSuffix(name, base64Suffix); ok {
			v, err := decodeBase64(value)
			if err != nil {
				return labels.EmptyLabels(), fmt.Errorf("invalid base64 encoding in value of label %q: %w", n, err)
			}
			name, value = n, v
		}
		if !model.LegacyValidation.IsValidLabelName(name) || strings.HasPrefix(name, "__") {
			return labels.EmptyLabels(), fmt.Errorf("improper label name %q", name)
		}
		if !utf8.ValidString(value) {
			return labels.EmptyLabels(), fmt.Errorf("value of label %q is not valid UTF-8", name)
		}
		pairs = setPair(pairs, name, value) // the last of a repeated name wins, as on the Pushgateway
	}
	if hasJob {
		pairs = setPair(pairs, "job", job) // the path job overrides a job pair
	}
	// An empty label is no label, as in Prometheus: .../env@base64/= names
	// the same group as no env at all (whose series a store receives as
	// the same series).
	pairs = slices.DeleteFunc(pairs, func(l labels.Label) bool { return l.Value == "" })
	return labels.New(pairs...), nil // sorted by name
}

// splitSegments appends the "/"-separated segments of p to dst, as
// strings.Split(p, "/") returns them.
func splitSegments(dst []string, p string) []string {
	for {
		i := strings.IndexByte(p, '/')
		if i < 0 {
			return append(dst, p)
		}
		dst = append(dst, p[:i])
		p = p[i+1:]
	}
}

// setPair sets name to value in pairs, replacing an earlier value.
func setPair(pairs []labels.Label, name, value string) []labels.Label {
	for i := range pairs {
		if pairs[i].Name == name {
			pairs[i].Value = value
			return pairs
		}
	}
	return append(pairs, labels.Label{Name: name, Value: value})
}

// decodeBase64 decodes base64url with optional padding; "=" is the empty string.
func decodeBase64(s string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return "", err
	}
	return string(b), nil
}
