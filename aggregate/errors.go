package aggregate

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/prometheus/prometheus/model/labels"
)

// Kind classifies why a push was rejected, so the HTTP layer can pick the
// status code and the self metrics can count by reason.
type Kind uint8

const (
	// KindInvalid is malformed or inconsistent input (HTTP 400).
	KindInvalid Kind = iota + 1
	// KindLimit is a limit on the number of live series (HTTP 429).
	KindLimit
	// KindTooLarge is a request over a per-request limit (HTTP 413).
	KindTooLarge
	// KindUnavailable means the operation could not be made durable
	// (HTTP 503): it was not acknowledged and must be retried.
	KindUnavailable
)

// Error is a rejected push. Its message names what was wrong; Reason is a
// short stable label value for the rejected-requests counter.
type Error struct {
	Kind   Kind
	Reason string
	Msg    string
	// Limit is the limits.* field that rejected the push (such as
	// "max_series"), empty when no limit did.
	Limit string
}

func (e *Error) Error() string { return e.Msg }

func invalid(reason, format string, args ...any) *Error {
	return &Error{Kind: KindInvalid, Reason: reason, Msg: fmt.Sprintf(format, args...)}
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

func itoa(n int) string { return strconv.Itoa(n) }

func quote(s string) string {
	const max = 64
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}

// seriesString prints a series the way PromQL users read it, shortened if huge.
func seriesString(ls labels.Labels) string {
	s := ls.String()
	if len(s) > 256 {
		s = s[:256] + "..."
	}
	return s
}

func limited(reason, limit, format string, args ...any) *Error {
	return &Error{Kind: KindLimit, Reason: reason, Limit: limit, Msg: fmt.Sprintf(format, args...)}
}

// AsError returns the *Error inside err, if any.
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

// Rejection reasons, used as the "reason" label of sluice_rejected_pushes_total.
const (
	ReasonBadLabel       = "invalid_label"
	ReasonBadMetricName  = "invalid_metric_name"
	ReasonUnknownMode    = "unknown_clear_mode"
	ReasonModeConflict   = "clear_mode_conflict"
	ReasonNegativeDelta  = "negative_counter_delta"
	ReasonNonFinite      = "non_finite_delta"
	ReasonLayoutChange   = "histogram_layout_change"
	ReasonBadHistogram   = "invalid_histogram"
	ReasonTypeConflict   = "type_conflict"
	ReasonDuplicate      = "duplicate_series"
	ReasonOtherGroup     = "series_owned_by_other_group"
	ReasonReservedName   = "reserved_metric_name"
	ReasonLimitRequest   = "series_per_request_limit"
	ReasonLimitLabels    = "labels_per_series_limit"
	ReasonLimitLabelSize = "label_length_limit"
	ReasonLimitGroup     = "series_per_group_limit"
	ReasonLimitTotal     = "series_limit"
)
