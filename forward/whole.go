package forward

import (
	"encoding/binary"
	"errors"
	"log/slog"
	"strconv"
	"time"
)

// Whole relay frames. A fresh relay frame (taken from memory, never sent)
// of at most max_samples_per_send samples goes to the target as it came:
// its snappy block is the request body. Nothing is decoded, split by
// shard, re-encoded or compressed, which is most of what relaying cost.
//
// Order per series, which the shards give by hashing each series to one
// sender, is kept another way: a whole frame is sent only while the
// shards hold no sample and no whole frame in flight has a series of it
// (keySet); frames that do not go whole (read back from disk, too large,
// or for a target that changes the series) go through the shards only
// while no whole frame is in flight. Up to one whole frame per shard is in
// flight, each on its own lane goroutine.

// wholeJob is one request of whole relay frames: one frame's block as it
// is, or several frames' requests one after the other (frames that
// arrived while every lane was busy share a request, up to
// max_samples_per_send, as they would share a shard's batch; their
// snappy blocks are joined, not compressed again: concatBlocks).
type wholeJob struct {
	slot   int // the dispatcher's job slot (keySet)
	frames []wholeFrame
	bytes  int // counted in sluice_forward_queue_bytes
}

type wholeFrame struct {
	seq   uint64 // in the tracker
	block []byte // the end of the frame's payload kept in memory
	info  *wireInfo
}

func (f *wholeFrame) samples() int { return f.info.floats + f.info.hists }

// canSendWhole reports whether f may be sent whole, order aside.
func (t *target) canSendWhole(f *readFrameRef) bool {
	return t.wire && f.block != nil && f.info != nil && f.samples <= t.cfg.QueueConfig.MaxSamplesPerSend &&
		len(f.info.keys) > 0
}

// lane sends the whole frames the dispatcher hands it until the target
// stops.
func (t *target) lane() {
	defer t.wg.Done()
	var body []byte // a merged request, reused
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-t.lanesDone:
			return
		case j := <-t.wholeJobs:
			if !t.sendWhole(j, &body) {
				return
			}
		}
	}
}

// sendWhole sends one job and hands it back to the dispatcher. It
// returns false if the target's context ended first: the frames stay in
// the backlog, unresolved. body is a scratch buffer.
func (t *target) sendWhole(j wholeJob, body *[]byte) bool {
	defer t.metrics.queueBytes.Sub(float64(j.bytes))
	if !t.sendFrames(j.frames, body) {
		return false
	}
	t.finMtx.Lock()
	t.finished = append(t.finished, j)
	t.finMtx.Unlock()
	t.wakeReader()
	return true
}

// sendFrames sends frames as one request, retrying as a shard does, and
// resolves them. A merged request that is rejected for good is sent again
// frame by frame, so that one sender's bad sample drops only that
// sender's frame.
func (t *target) sendFrames(frames []wholeFrame, body *[]byte) bool {
	var req []byte
	n := 0
	if len(frames) == 1 {
		req, n = frames[0].block, frames[0].samples()
	} else {
		for i := range frames {
			n += frames[i].samples()
		}
		*body = concatBlocks((*body)[:0], frames)
		req = *body
	}
	aborted, err := t.deliver(req, n)
	switch {
	case aborted:
		return false
	case err != nil && len(frames) > 1:
		for i := range frames {
			if !t.sendFrames(frames[i:i+1], body) {
				return false
			}
		}
		return true
	case err != nil:
		t.dropRejected(err, n)
	default:
		for i := range frames {
			f := &frames[i]
			t.sentCounts(f.info.floats, f.info.hists, f.info.maxT)
		}
	}
	for i := range frames {
		t.track.resolve(frames[i].seq, frames[i].samples())
	}
	return true
}

// concatBlocks appends to dst one snappy block of the frames' requests,
// one after the other (protobuf messages concatenated merge: their series
// and metadata add up). A block is its decoded length, then elements that
// copy from at most as far back as the block's own start, so the frames'
// elements are used as they are, after one preamble of the summed
// lengths: nothing is compressed again.
func concatBlocks(dst []byte, frames []wholeFrame) []byte {
	total := uint64(0)
	for i := range frames {
		n, _ := binary.Uvarint(frames[i].block) // checked when it was received
		total += n
	}
	dst = binary.AppendUvarint(dst, total)
	for i := range frames {
		_, k := binary.Uvarint(frames[i].block)
		dst = append(dst, frames[i].block[k:]...)
	}
	return dst
}

// takeFinished moves the jobs done since the last call to dst.
func (t *target) takeFinished(dst []wholeJob) []wholeJob {
	t.finMtx.Lock()
	dst = append(dst, t.finished...)
	clear(t.finished)
	t.finished = t.finished[:0]
	t.finMtx.Unlock()
	return dst
}

// deliver sends body, a request of n samples, retrying recoverable errors
// with capped exponential backoff (or the server's Retry-After). It
// returns the non-recoverable error that ended it (nil once the body was
// accepted), or aborted if the target's context ended first.
func (t *target) deliver(body []byte, n int) (aborted bool, err error) {
	q := t.cfg.QueueConfig
	backoff := time.Duration(q.MinBackoff)
	for attempt := 0; ; attempt++ {
		err := t.client.store(t.ctx, body, attempt)
		if err == nil {
			if attempt > 0 {
				t.logger.Info("batch sent after retries", "samples", n, "retries", attempt)
			}
			return false, nil
		}
		if t.ctx.Err() != nil {
			return true, nil
		}
		t.setError(err)
		var rerr recoverableError
		if !errors.As(err, &rerr) {
			return false, err
		}
		sleep := backoff
		if rerr.retryAfter > 0 {
			sleep = rerr.retryAfter
		}
		level := slog.LevelDebug
		if attempt == 0 {
			level = slog.LevelWarn // once per batch; retries of it are debug
		}
		t.logger.Log(t.ctx, level, "send failed, retrying batch", "samples", n, "retry_in", sleep, "err", err.Error())
		timer := time.NewTimer(sleep)
		select {
		case <-t.ctx.Done():
			timer.Stop()
			return true, nil
		case <-timer.C:
		}
		t.metrics.samplesRetried.Add(float64(n))
		backoff = min(2*backoff, time.Duration(q.MaxBackoff))
	}
}

// dropRejected counts n samples the target rejected for good with err.
func (t *target) dropRejected(err error, n int) {
	reason := "error"
	var serr *statusError
	if errors.As(err, &serr) {
		reason = strconv.Itoa(serr.code)
		if serr.reason != "" {
			reason = serr.reason
		}
	}
	t.drop(reason, n)
	t.logger.Error("dropping batch: non-recoverable error", "samples", n, "reason", reason, "err", err.Error())
}
