package aggregate

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

// TestConcurrentPushesSumExactly runs pushes to shared and separate series
// from many goroutines (run it with -race) and checks that no delta is lost.
func TestConcurrentPushesSumExactly(t *testing.T) {
	s, _ := newTestStore(t, testSettings())
	const workers, pushes = 8, 200
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < pushes; i++ {
				body := fmt.Sprintf("# TYPE shared_total counter\nshared_total 1\n# TYPE own_total counter\nown_total{w=\"%d\"} 2\n", w)
				if err := push(t, s, fmt.Sprintf("job=j%d", w%2), MethodPost, body); err != nil {
					t.Error(err)
					return
				}
				if i%50 == 0 {
					_, _ = s.Gather()
				}
			}
		}()
	}
	wg.Wait()
	got := expose(t, s)
	for _, want := range []string{
		fmt.Sprintf("shared_total{instance=\"\",job=\"j0\"} %d\n", workers/2*pushes),
		fmt.Sprintf("shared_total{instance=\"\",job=\"j1\"} %d\n", workers/2*pushes),
		fmt.Sprintf("own_total{instance=\"\",job=\"j1\",w=\"7\"} %d\n", 2*pushes),
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in\n%s", want, got)
		}
	}
}

// TestConcurrentTypeChanges: with Pushgateway semantics, groups that PUT
// one metric as a counter or a gauge, with changing HELP texts, while
// others scrape (run it with -race). A type change is accepted only when
// the pushing group alone has the metric, so at every moment the metric
// has one type, and at the end every group shows its last accepted push.
func TestConcurrentTypeChanges(t *testing.T) {
	set := testSettings()
	set.Semantics = SemanticsPushgateway
	s, _ := newTestStore(t, set)
	const workers, pushes = 4, 300
	type last struct {
		typ string
		val int
	}
	lasts := make([]last, workers)
	var mu sync.Mutex
	accepted := map[string]int{} // by type
	refused := 0
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range pushes {
				typ := "counter"
				if (i/6+w)%2 == 1 {
					typ = "gauge"
				}
				body := fmt.Sprintf("# HELP x Help %d.\n# TYPE x %s\nx %d\n", i%5, typ, i)
				if i%2 == 0 {
					body = "y 1\n" // let go of x every other push
				}
				err := push(t, s, fmt.Sprintf("job=j%d", w), MethodPut, body)
				mu.Lock()
				if err == nil && !strings.HasPrefix(body, "y") {
					accepted[typ]++
				} else if err != nil {
					refused++
				}
				mu.Unlock()
				switch {
				case err == nil && strings.HasPrefix(body, "y"):
					lasts[w] = last{}
				case err == nil:
					lasts[w] = last{typ, i}
				case !strings.Contains(err.Error(), "a metric name has one type"):
					t.Error(err)
					return
				}
				if i%25 == 0 {
					_, _ = s.Gather()
				}
			}
		}()
	}
	wg.Wait()
	got := expose(t, s)
	typ := ""
	for w, l := range lasts {
		if l.typ == "" {
			continue
		}
		if typ != "" && l.typ != typ {
			t.Fatalf("groups hold x as %s and %s at once:\n%s", typ, l.typ, got)
		}
		typ = l.typ
		if line := fmt.Sprintf("x{instance=\"\",job=\"j%d\"} %d\n", w, l.val); !strings.Contains(got, line) {
			t.Errorf("missing %q in\n%s", line, got)
		}
	}
	if typ != "" && !strings.Contains(got, "# TYPE x "+typ+"\n") {
		t.Errorf("want x as %s:\n%s", typ, got)
	}
	if accepted["counter"] == 0 || accepted["gauge"] == 0 || refused == 0 {
		t.Errorf("want pushes of either type accepted, and refused ones; got %v accepted, %d refused", accepted, refused)
	}
}
