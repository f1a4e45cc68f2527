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
