package configs

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// k8sContainer is the part of a container spec (Kubernetes, Knative) that
// says which environment variables the deployment sets.
type k8sContainer struct {
	Env []struct {
		Name string `yaml:"name"`
	} `yaml:"env"`
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func envNames(cs []k8sContainer) []string {
	var out []string
	for _, c := range cs {
		for _, e := range c.Env {
			out = append(out, e.Name)
		}
	}
	return out
}

// kubernetesConfig returns the sluice.yml of the ConfigMap and the
// environment variables the StatefulSet sets.
func kubernetesConfig(t *testing.T) (string, []string) {
	var cm struct {
		Data map[string]string `yaml:"data"`
	}
	readYAML(t, "../deploy/kubernetes/configmap.yaml", &cm)
	var sts struct {
		Spec struct {
			Template struct {
				Spec struct {
					Containers []k8sContainer `yaml:"containers"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	readYAML(t, "../deploy/kubernetes/statefulset.yaml", &sts)
	if cm.Data["sluice.yml"] == "" {
		t.Fatal("deploy/kubernetes/configmap.yaml has no data.sluice.yml")
	}
	return cm.Data["sluice.yml"], envNames(sts.Spec.Template.Spec.Containers)
}

// cloudRunConfig returns deploy/cloudrun/sluice.yml and the environment
// variables of the service plus those Cloud Run sets itself.
func cloudRunConfig(t *testing.T) (string, []string) {
	var svc struct {
		Spec struct {
			Template struct {
				Spec struct {
					Containers []k8sContainer `yaml:"containers"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	readYAML(t, "../deploy/cloudrun/service.yaml", &svc)
	b, err := os.ReadFile("../deploy/cloudrun/sluice.yml")
	if err != nil {
		t.Fatal(err)
	}
	// The container contract: Cloud Run sets these in every instance.
	platform := []string{"PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"}
	return string(b), append(envNames(svc.Spec.Template.Spec.Containers), platform...)
}

// composeConfig returns deploy/compose/sluice.yml and the environment of
// the compose file's sluice service.
func composeConfig(t *testing.T) (string, []string) {
	var c struct {
		Services map[string]struct {
			Environment map[string]string `yaml:"environment"`
		} `yaml:"services"`
	}
	readYAML(t, "../deploy/compose/docker-compose.yml", &c)
	var env []string
	for k := range c.Services["sluice"].Environment {
		env = append(env, k)
	}
	b, err := os.ReadFile("../deploy/compose/sluice.yml")
	if err != nil {
		t.Fatal(err)
	}
	return string(b), env
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// TestDeployConfigsLoad loads the Sluice config of every deployment in
// deploy/ with configs.Load, with the environment that deployment sets,
// and checks that each ${VAR} the config uses is one the deployment sets
// (an unset one would silently expand to "").
func TestDeployConfigsLoad(t *testing.T) {
	for _, tc := range []struct {
		name    string
		load    func(*testing.T) (string, []string)
		targets int
	}{
		{"kubernetes", kubernetesConfig, 1},
		{"cloudrun", cloudRunConfig, 1},
		{"compose", composeConfig, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, env := tc.load(t)
			set := map[string]bool{}
			for _, e := range env {
				set[e] = true
				// A distinct value per variable shows where each one lands.
				v := "value-of-" + e
				if strings.HasSuffix(e, "_URL") {
					v = "https://store.example/" + strings.ToLower(e)
				}
				t.Setenv(e, v)
			}
			var missing []string
			for _, m := range envRef.FindAllStringSubmatch(body, -1) {
				if !set[m[1]] {
					missing = append(missing, m[1])
				}
			}
			if len(missing) > 0 {
				sort.Strings(missing)
				t.Fatalf("the config uses ${%s} but the deployment does not set it", strings.Join(missing, "}, ${"))
			}
			path := filepath.Join(t.TempDir(), "sluice.yml")
			if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := Load(path)
			if err != nil {
				t.Fatalf("configs.Load: %v", err)
			}
			if len(c.RemoteWrite) != tc.targets {
				t.Fatalf("%d remote_write targets, want %d", len(c.RemoteWrite), tc.targets)
			}
			rw := c.RemoteWrite[0]
			if strings.Contains(rw.URL, "${") || rw.URL == "" {
				t.Errorf("remote_write url %q not expanded", rw.URL)
			}
			if ba := rw.HTTPClientConfig.BasicAuth; ba != nil {
				if ba.Username != "value-of-REMOTE_WRITE_USERNAME" || string(ba.Password) != "value-of-REMOTE_WRITE_PASSWORD" {
					t.Errorf("basic_auth not expanded from the environment: %q", ba.Username)
				}
			}
			if !c.SelfMetrics.Forward || c.SelfMetrics.Instance == "" {
				t.Errorf("self_metrics: %+v; a deployment names its instance and forwards its own metrics", c.SelfMetrics)
			}
		})
	}
}
