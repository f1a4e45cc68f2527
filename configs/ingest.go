package configs

import (
	"fmt"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/relabel"
)

// IngestConfig is what happens to series as they arrive, before anything
// else sees them. It is reloadable.
type IngestConfig struct {
	// RelabelConfigs are applied, in order and with Prometheus'
	// relabelling semantics, to every series received over remote_write
	// (relayed and aggregated alike), before anything else is done with
	// it. A series relabelled away costs nothing further and is counted.
	// Pushes to the Pushgateway API are not relabelled.
	RelabelConfigs []*relabel.Config `yaml:"relabel_configs,omitempty"`
}

func (c *IngestConfig) validate() error {
	for i, rc := range c.RelabelConfigs {
		if rc == nil {
			return fmt.Errorf("relabel_configs[%d] is empty", i)
		}
		// Remote-Write 2.0 senders may send UTF-8 names; relabelling may
		// set them too. What reaches aggregation is checked there.
		if err := rc.Validate(model.UTF8Validation); err != nil {
			return fmt.Errorf("relabel_configs[%d]: %w", i, err)
		}
	}
	return nil
}
