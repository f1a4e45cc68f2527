package main

// Tests of the operations files: the Dockerfile, deploy/ (Kubernetes,
// Cloud Run, compose), dashboards/ and alerts/. Each deployment's command
// line runs the real binary, and every metric the dashboard and the alert
// rules query must be one Sluice exposes.

import (
	"bufio"
	"debug/elf"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/promql/parser"
	"gopkg.in/yaml.v3"
)

const repoRoot = "../.."

// dockerfile is what the tests need from the Dockerfile.
type dockerfile struct {
	build      string   // the `go build` command of a RUN line
	entrypoint []string // exec form
	cmd        []string // exec form
	user       string
	volumes    []string
	expose     []string
}

func readDockerfile(t *testing.T) dockerfile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var d dockerfile
	var insts []string
	var cur strings.Builder
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasSuffix(line, `\`) {
			cur.WriteString(strings.TrimSuffix(line, `\`) + " ")
			continue
		}
		cur.WriteString(line)
		insts = append(insts, cur.String())
		cur.Reset()
	}
	execForm := func(inst, s string) []string {
		var v []string
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			t.Fatalf("Dockerfile %s must use the exec (JSON) form: %v", inst, err)
		}
		return v
	}
	for _, in := range insts {
		inst, rest, _ := strings.Cut(in, " ")
		rest = strings.TrimSpace(rest)
		switch strings.ToUpper(inst) {
		case "RUN":
			if i := strings.Index(rest, "go build"); i >= 0 {
				build := rest
				if j := strings.Index(build, "&&"); j > i {
					build = build[:j]
				}
				d.build = strings.TrimSpace(build)
			}
		case "ENTRYPOINT":
			d.entrypoint = execForm(inst, rest)
		case "CMD":
			d.cmd = execForm(inst, rest)
		case "USER":
			d.user = rest
		case "VOLUME":
			d.volumes = execForm(inst, rest)
		case "EXPOSE":
			d.expose = strings.Fields(rest)
		}
	}
	return d
}

// buildLikeDockerfile runs the Dockerfile's own `go build` command, with
// the output redirected to a temporary file, and checks that the result
// is static (the distroless/static base has no C library).
func buildLikeDockerfile(t *testing.T, d dockerfile) string {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: builds and runs the binary")
	}
	re := regexp.MustCompile(`-o\s+\S+`)
	if !re.MatchString(d.build) {
		t.Fatalf("Dockerfile build command %q has no -o", d.build)
	}
	bin := filepath.Join(t.TempDir(), "sluice")
	cmd := exec.Command("sh", "-c", re.ReplaceAllString(d.build, "-o "+bin))
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", d.build, err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Fatalf("the Dockerfile's build is dynamically linked; distroless/static cannot run it")
		}
	}
	return bin
}

// container is the part of a Kubernetes or Knative container spec the
// tests read.
type container struct {
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Env     []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom struct {
			SecretKeyRef *struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"secretKeyRef"`
			FieldRef *struct {
				FieldPath string `yaml:"fieldPath"`
			} `yaml:"fieldRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	StartupProbe   *probe `yaml:"startupProbe"`
	VolumeMounts   []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
	SecurityContext map[string]any `yaml:"securityContext"`
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
	} `yaml:"httpGet"`
}

func (c container) probePaths() []string {
	var out []string
	for _, p := range []*probe{c.ReadinessProbe, c.LivenessProbe, c.StartupProbe} {
		if p != nil && p.HTTPGet != nil {
			out = append(out, p.HTTPGet.Path)
		}
	}
	return out
}

func (c container) mountFor(path string) string {
	for _, m := range c.VolumeMounts {
		if path == m.MountPath || strings.HasPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/") {
			return m.Name
		}
	}
	return ""
}

type podSpec struct {
	TerminationGracePeriodSeconds int            `yaml:"terminationGracePeriodSeconds"`
	SecurityContext               map[string]any `yaml:"securityContext"`
	Containers                    []container    `yaml:"containers"`
	Volumes                       []struct {
		Name      string `yaml:"name"`
		ConfigMap *struct {
			Name string `yaml:"name"`
		} `yaml:"configMap"`
		Secret *struct {
			SecretName string `yaml:"secretName"`
			Items      []struct {
				Key  string `yaml:"key"`
				Path string `yaml:"path"`
			} `yaml:"items"`
		} `yaml:"secret"`
		EmptyDir map[string]any `yaml:"emptyDir"`
	} `yaml:"volumes"`
}

type statefulSet struct {
	Spec struct {
		Replicas    int    `yaml:"replicas"`
		ServiceName string `yaml:"serviceName"`
		Selector    struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec podSpec `yaml:"spec"`
		} `yaml:"template"`
		VolumeClaimTemplates []struct {
			Metadata struct {
				Name string `yaml:"name"`
			} `yaml:"metadata"`
		} `yaml:"volumeClaimTemplates"`
	} `yaml:"spec"`
}

type knativeService struct {
	Spec struct {
		Template struct {
			Metadata struct {
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"metadata"`
			Spec podSpec `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type composeFile struct {
	Services map[string]struct {
		Build *struct {
			Context    string `yaml:"context"`
			Dockerfile string `yaml:"dockerfile"`
		} `yaml:"build"`
		Image       string            `yaml:"image"`
		Command     []string          `yaml:"command"`
		Environment map[string]string `yaml:"environment"`
		Ports       []string          `yaml:"ports"`
		Volumes     []string          `yaml:"volumes"`
	} `yaml:"services"`
	Volumes map[string]any `yaml:"volumes"`
}

// readYAMLDoc decodes the first document of kind (any kind when "") of a
// YAML file under the repository root into v.
func readYAMLDoc(t *testing.T, path, kind string, v any) {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot, path))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	for {
		var n yaml.Node
		if err := dec.Decode(&n); err != nil {
			t.Fatalf("%s: no document of kind %q (%v)", path, kind, err)
		}
		var meta struct {
			Kind string `yaml:"kind"`
		}
		if err := n.Decode(&meta); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if kind == "" || meta.Kind == kind {
			if err := n.Decode(v); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			return
		}
	}
}

func flagValue(args []string, name string) (string, bool) {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// localRun is a deployment's command line, rewritten to run here.
type localRun struct {
	name   string
	args   []string          // the deployment's flags, as written
	config string            // the config file's contents, "" for none
	env    map[string]string // what the platform would set
	probes []string          // HTTP paths the platform probes
}

// TestDeployCommandLinesRunSluice runs the binary built by the
// Dockerfile's own build command with the flags of every deployment (the
// Dockerfile's ENTRYPOINT and CMD, the StatefulSet's and the Cloud Run
// service's args, the compose command) and their config files, on a
// loopback port with a temporary directory for /data. A renamed flag, a
// config that does not load or a probe path that does not answer fails.
func TestDeployCommandLinesRunSluice(t *testing.T) {
	d := readDockerfile(t)
	bin := buildLikeDockerfile(t, d)
	target := newLoopbackServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	rwURL := target + "/api/v1/write"

	var sts statefulSet
	readYAMLDoc(t, "deploy/kubernetes/statefulset.yaml", "StatefulSet", &sts)
	var cm struct {
		Data map[string]string `yaml:"data"`
	}
	readYAMLDoc(t, "deploy/kubernetes/configmap.yaml", "ConfigMap", &cm)
	var ksvc knativeService
	readYAMLDoc(t, "deploy/cloudrun/service.yaml", "Service", &ksvc)
	cloudRunConfig, err := os.ReadFile(filepath.Join(repoRoot, "deploy/cloudrun/sluice.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var compose composeFile
	readYAMLDoc(t, "deploy/compose/docker-compose.yml", "", &compose)
	composeConfig, err := os.ReadFile(filepath.Join(repoRoot, "deploy/compose/sluice.yml"))
	if err != nil {
		t.Fatal(err)
	}
	k8s := sts.Spec.Template.Spec.Containers[0]
	cr := ksvc.Spec.Template.Spec.Containers[0]
	creds := map[string]string{"REMOTE_WRITE_URL": rwURL, "REMOTE_WRITE_USERNAME": "u", "REMOTE_WRITE_PASSWORD": "p"}
	withCreds := func(m map[string]string) map[string]string {
		for k, v := range creds {
			m[k] = v
		}
		return m
	}
	runs := []localRun{
		{name: "dockerfile", args: append(append([]string(nil), d.entrypoint[1:]...), d.cmd...)},
		{name: "kubernetes", args: k8s.Args, config: cm.Data["sluice.yml"],
			env: withCreds(map[string]string{"POD_NAME": "sluice-0"}), probes: k8s.probePaths()},
		{name: "cloudrun", args: cr.Args, config: string(cloudRunConfig),
			env: withCreds(map[string]string{"K_REVISION": "sluice-00001-abc", "K_SERVICE": "sluice", "PORT": "9091"}), probes: cr.probePaths()},
		// The compose target's host is a container name: point it here.
		{name: "compose", args: compose.Services["sluice"].Command,
			config: strings.ReplaceAll(string(composeConfig), "http://victoriametrics:8428", target)},
	}
	for _, r := range runs {
		t.Run(r.name, func(t *testing.T) {
			if len(r.args) == 0 {
				t.Fatal("no command line found")
			}
			data := t.TempDir()
			var args []string
			for _, a := range r.args {
				name, val, ok := strings.Cut(a, "=")
				if !strings.HasPrefix(a, "--") || (!ok && strings.Contains(a, " ")) {
					t.Fatalf("argument %q: write flags as --name=value", a)
				}
				switch {
				case name == "--web.listen-address":
					if val != ":9091" {
						t.Errorf("--web.listen-address=%s; every deployment publishes 9091", val)
					}
					continue // replaced by a loopback port below
				case name == "--config.file":
					p := filepath.Join(t.TempDir(), "sluice.yml")
					if err := os.WriteFile(p, []byte(r.config), 0o600); err != nil {
						t.Fatal(err)
					}
					a = "--config.file=" + p
				case strings.HasPrefix(val, "/data/") || val == "/data":
					a = name + "=" + data + strings.TrimPrefix(val, "/data")
				case strings.HasPrefix(val, "/"):
					t.Fatalf("argument %q names a path outside /data, the only writable volume", a)
				}
				args = append(args, a)
			}
			if _, ok := flagValue(r.args, "config.file"); ok != (r.config != "") {
				t.Fatalf("config file given: %v; config found: %v", ok, r.config != "")
			}
			if w, _ := flagValue(r.args, "wal.dir"); !strings.HasPrefix(w, "/data/") {
				t.Fatalf("--wal.dir=%q; the WAL belongs on the /data volume", w)
			}
			for k, v := range r.env {
				t.Setenv(k, v)
			}
			p := startSluiceOn(t, bin, freePort(t), args...)
			t.Cleanup(func() { p.stop(t) })
			for _, path := range append([]string{"/-/healthy", "/-/ready"}, r.probes...) {
				if code, body := p.get(t, path); code != http.StatusOK {
					t.Errorf("GET %s: %d %s", path, code, body)
				}
			}
			if _, err := os.Stat(filepath.Join(data, "wal")); err != nil {
				t.Errorf("the WAL is not on the /data volume: %v", err)
			}
		})
	}
}

// TestDeployDockerfile checks what cannot be run here without a Docker
// engine: non-root, the volume and the published port.
func TestDeployDockerfile(t *testing.T) {
	d := readDockerfile(t)
	if u, _, _ := strings.Cut(d.user, ":"); u == "" || u == "0" || u == "root" {
		t.Errorf("USER %q: the image must run as non-root", d.user)
	}
	if len(d.volumes) != 1 || d.volumes[0] != "/data" {
		t.Errorf("VOLUME %v, want [/data]", d.volumes)
	}
	if len(d.expose) != 1 || d.expose[0] != "9091" {
		t.Errorf("EXPOSE %v, want 9091", d.expose)
	}
	if len(d.entrypoint) == 0 || !strings.HasSuffix(d.entrypoint[0], "/sluice") {
		t.Errorf("ENTRYPOINT %v does not run sluice", d.entrypoint)
	}
	if !strings.Contains(d.build, "CGO_ENABLED=0") || !strings.Contains(d.build, "./cmd/proxy") {
		t.Errorf("build command %q: want a static build of ./cmd/proxy", d.build)
	}
}

// TestDeployKubernetesConsistent checks that the manifests refer to each
// other correctly: what kubeconform (make check-deploy) cannot see.
func TestDeployKubernetesConsistent(t *testing.T) {
	var sts statefulSet
	readYAMLDoc(t, "deploy/kubernetes/statefulset.yaml", "StatefulSet", &sts)
	var secret struct {
		Metadata   struct{ Name string } `yaml:"metadata"`
		StringData map[string]string     `yaml:"stringData"`
	}
	readYAMLDoc(t, "deploy/kubernetes/secret.yaml", "Secret", &secret)
	var cm struct {
		Metadata struct{ Name string } `yaml:"metadata"`
	}
	readYAMLDoc(t, "deploy/kubernetes/configmap.yaml", "ConfigMap", &cm)
	var pdb struct {
		Spec struct {
			Selector struct {
				MatchLabels map[string]string `yaml:"matchLabels"`
			} `yaml:"selector"`
		} `yaml:"spec"`
	}
	readYAMLDoc(t, "deploy/kubernetes/poddisruptionbudget.yaml", "PodDisruptionBudget", &pdb)
	var kust struct {
		Resources []string `yaml:"resources"`
	}
	readYAMLDoc(t, "deploy/kubernetes/kustomization.yaml", "Kustomization", &kust)

	s := sts.Spec
	pod := s.Template.Spec
	c := pod.Containers[0]
	if s.Replicas != 1 {
		t.Errorf("replicas %d: the aggregation state lives in one process", s.Replicas)
	}
	for k, v := range s.Selector.MatchLabels {
		if s.Template.Metadata.Labels[k] != v || pdb.Spec.Selector.MatchLabels[k] != v {
			t.Errorf("label %s=%s: selector, pod template and PodDisruptionBudget disagree", k, v)
		}
	}
	// Every secretKeyRef exists in the example Secret.
	for _, e := range c.Env {
		if ref := e.ValueFrom.SecretKeyRef; ref != nil {
			if ref.Name != secret.Metadata.Name {
				t.Errorf("env %s: secret %q, the manifest's is %q", e.Name, ref.Name, secret.Metadata.Name)
			} else if _, ok := secret.StringData[ref.Key]; !ok {
				t.Errorf("env %s: key %q missing from secret.yaml", e.Name, ref.Key)
			}
		}
	}
	// The config file is in the ConfigMap's mount, the WAL in the claim's.
	cfg, _ := flagValue(c.Args, "config.file")
	vol := c.mountFor(cfg)
	found := false
	for _, v := range pod.Volumes {
		if v.Name == vol && v.ConfigMap != nil && v.ConfigMap.Name == cm.Metadata.Name && filepath.Base(cfg) == "sluice.yml" {
			found = true
		}
	}
	if !found {
		t.Errorf("--config.file=%s is not sluice.yml of the mounted ConfigMap %s", cfg, cm.Metadata.Name)
	}
	walDir, _ := flagValue(c.Args, "wal.dir")
	if len(s.VolumeClaimTemplates) != 1 || c.mountFor(walDir) != s.VolumeClaimTemplates[0].Metadata.Name {
		t.Errorf("--wal.dir=%s is not on the volume claim template", walDir)
	}
	// The kubelet's SIGKILL must come after the HTTP shutdown (at most
	// shutdownTimeout) and the forward drain.
	drain := 10 * time.Second
	if v, ok := flagValue(c.Args, "forward.drain-timeout"); ok {
		var err error
		if drain, err = time.ParseDuration(v); err != nil {
			t.Fatal(err)
		}
	}
	if grace := time.Duration(pod.TerminationGracePeriodSeconds) * time.Second; grace <= shutdownTimeout+drain {
		t.Errorf("terminationGracePeriodSeconds %s <= %s shutdown + %s drain", grace, shutdownTimeout, drain)
	}
	if pod.SecurityContext["runAsNonRoot"] != true || c.SecurityContext["readOnlyRootFilesystem"] != true {
		t.Errorf("want runAsNonRoot and readOnlyRootFilesystem")
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet.Path != "/-/ready" || c.LivenessProbe == nil || c.LivenessProbe.HTTPGet.Path != "/-/healthy" {
		t.Errorf("want readiness on /-/ready and liveness on /-/healthy")
	}
	// kustomization.yaml lists every manifest in the directory.
	files, _ := filepath.Glob(filepath.Join(repoRoot, "deploy/kubernetes/*.yaml"))
	var want []string
	for _, f := range files {
		if b := filepath.Base(f); b != "kustomization.yaml" {
			want = append(want, b)
		}
	}
	got := append([]string(nil), kust.Resources...)
	sort.Strings(got)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("kustomization resources %v, files %v", got, want)
	}
}

// TestDeployCloudRunService checks the settings that keep Sluice correct
// on Cloud Run.
func TestDeployCloudRunService(t *testing.T) {
	var svc knativeService
	readYAMLDoc(t, "deploy/cloudrun/service.yaml", "Service", &svc)
	ann := svc.Spec.Template.Metadata.Annotations
	for k, want := range map[string]string{
		"autoscaling.knative.dev/minScale":  "1",
		"autoscaling.knative.dev/maxScale":  "1",
		"run.googleapis.com/cpu-throttling": "false",
	} {
		if ann[k] != want {
			t.Errorf("annotation %s = %q, want %q", k, ann[k], want)
		}
	}
	c := svc.Spec.Template.Spec.Containers[0]
	if len(c.Ports) != 1 || c.Ports[0].ContainerPort != 9091 {
		t.Errorf("container port %+v, want 9091", c.Ports)
	}
	// Cloud Run kills 10 s after SIGTERM.
	if v, _ := flagValue(c.Args, "forward.drain-timeout"); v == "" || mustDuration(t, v) >= 10*time.Second {
		t.Errorf("--forward.drain-timeout=%q must end before Cloud Run's 10 s SIGKILL", v)
	}
	if c.StartupProbe == nil || c.StartupProbe.HTTPGet.Path != "/-/ready" || c.LivenessProbe == nil || c.LivenessProbe.HTTPGet.Path != "/-/healthy" {
		t.Errorf("want the startup probe on /-/ready and liveness on /-/healthy")
	}
	for _, e := range c.Env {
		if strings.HasPrefix(e.Name, "REMOTE_WRITE_") && (e.ValueFrom.SecretKeyRef == nil || e.Value != "") {
			t.Errorf("env %s must come from Secret Manager (secretKeyRef)", e.Name)
		}
	}
	cfg, _ := flagValue(c.Args, "config.file")
	ok := false
	for _, v := range svc.Spec.Template.Spec.Volumes {
		if v.Name == c.mountFor(cfg) && v.Secret != nil && len(v.Secret.Items) == 1 && v.Secret.Items[0].Path == filepath.Base(cfg) {
			ok = true
		}
	}
	if !ok {
		t.Errorf("--config.file=%s is not the mounted secret's file", cfg)
	}
}

func mustDuration(t *testing.T, s string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestDeployComposeAndGrafana checks the compose file and Grafana's
// provisioning against each other (compose itself cannot run here).
func TestDeployComposeAndGrafana(t *testing.T) {
	var c composeFile
	readYAMLDoc(t, "deploy/compose/docker-compose.yml", "", &c)
	for _, name := range []string{"sluice", "victoriametrics", "grafana"} {
		if _, ok := c.Services[name]; !ok {
			t.Fatalf("no service %s", name)
		}
	}
	sl := c.Services["sluice"]
	if sl.Build == nil {
		t.Fatal("sluice is not built from the repository")
	}
	if _, err := os.Stat(filepath.Join(repoRoot, "deploy/compose", sl.Build.Context, sl.Build.Dockerfile)); err != nil {
		t.Errorf("build context: %v", err)
	}
	mounts := map[string]string{} // container path -> host path, for grafana
	for _, v := range c.Services["grafana"].Volumes {
		parts := strings.Split(v, ":")
		mounts[parts[1]] = parts[0]
		if strings.HasPrefix(parts[0], ".") {
			if _, err := os.Stat(filepath.Join(repoRoot, "deploy/compose", parts[0])); err != nil {
				t.Errorf("grafana volume %s: %v", v, err)
			}
		}
	}
	prov := filepath.Join(repoRoot, "deploy/compose", mounts["/etc/grafana/provisioning"])
	var ds struct {
		APIVersion  int `yaml:"apiVersion"`
		Datasources []struct {
			Name, Type, URL, UID string
			Access               string `yaml:"access"`
		} `yaml:"datasources"`
	}
	readYAMLDoc(t, strings.TrimPrefix(filepath.Join(prov, "datasources/victoriametrics.yml"), repoRoot+"/"), "", &ds)
	if ds.APIVersion != 1 || len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" ||
		ds.Datasources[0].URL != "http://victoriametrics:8428" {
		t.Errorf("datasource %+v: want one prometheus-type data source on the victoriametrics service", ds)
	}
	var dp struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Type    string `yaml:"type"`
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	readYAMLDoc(t, strings.TrimPrefix(filepath.Join(prov, "dashboards/sluice.yml"), repoRoot+"/"), "", &dp)
	if dp.APIVersion != 1 || len(dp.Providers) != 1 || dp.Providers[0].Type != "file" {
		t.Fatalf("dashboard provider %+v", dp)
	}
	host, ok := mounts[dp.Providers[0].Options.Path]
	if !ok {
		t.Fatalf("the provider reads %s, which compose does not mount", dp.Providers[0].Options.Path)
	}
	if _, err := os.Stat(filepath.Join(repoRoot, "deploy/compose", host, "sluice.json")); err != nil {
		t.Errorf("the mounted dashboards directory has no sluice.json: %v", err)
	}
}

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	SchemaVersion int `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		Title      string `json:"title"`
		Type       string `json:"type"`
		Datasource *struct {
			UID string `json:"uid"`
		} `json:"datasource"`
		Targets []struct {
			Expr       string `json:"expr"`
			Datasource struct {
				Type string `json:"type"`
				UID  string `json:"uid"`
			} `json:"datasource"`
		} `json:"targets"`
	} `json:"panels"`
}

// grafanaVar matches $name, ${name} and ${name:format}.
var grafanaVar = regexp.MustCompile(`\$\{([A-Za-z0-9_]+)(?::[^}]*)?\}|\$([A-Za-z0-9_]+)`)

// substituteGrafana replaces Grafana's variables so that an expression
// parses: intervals become 5m, every other variable a regexp matching
// anything (they only appear in =~ matchers).
func substituteGrafana(expr string) string {
	return grafanaVar.ReplaceAllStringFunc(expr, func(m string) string {
		name := strings.Trim(m, "${}")
		name, _, _ = strings.Cut(name, ":")
		switch name {
		case "__rate_interval", "__interval", "__range":
			return "5m"
		}
		return ".*"
	})
}

// queryExprs returns every PromQL expression of the dashboard (variables
// substituted) and of the alert rules, by where it is.
func queryExprs(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	b, err := os.ReadFile(filepath.Join(repoRoot, "dashboards/sluice.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("dashboards/sluice.json: %v", err)
	}
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d", d.SchemaVersion)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
		if q, ok := v.Query.(map[string]any); ok && v.Type == "query" {
			if s, _ := q["query"].(string); strings.HasPrefix(s, "label_values(") {
				// label_values(metric, label): the metric must exist too.
				metric, _, _ := strings.Cut(strings.TrimPrefix(s, "label_values("), ",")
				out["variable "+v.Name] = metric
			}
		}
	}
	if vars["datasource"] != "datasource" || vars["instance"] != "query" {
		t.Errorf("variables %v: want a datasource variable and an instance query variable", vars)
	}
	for _, p := range d.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for i, tg := range p.Targets {
			if tg.Datasource.UID != "${datasource}" || (p.Datasource != nil && p.Datasource.UID != "${datasource}") {
				t.Errorf("panel %q: data source %q, want the ${datasource} variable", p.Title, tg.Datasource.UID)
			}
			if !strings.Contains(tg.Expr, `instance=~"$instance"`) {
				t.Errorf("panel %q query %d ignores the instance variable: %s", p.Title, i, tg.Expr)
			}
			out["panel "+p.Title+" #"+string(rune('A'+i))] = substituteGrafana(tg.Expr)
		}
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert  string `yaml:"alert"`
				Record string `yaml:"record"`
				Expr   string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	readYAMLDoc(t, "alerts/sluice.rules.yml", "", &rules)
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			out["rule "+r.Alert+r.Record] = r.Expr
		}
	}
	return out
}

// seriesLabels returns, for every series name in an exposition (histogram
// and summary families expanded to _bucket/_sum/_count), the label names
// its series carry.
func seriesLabels(t *testing.T, body string) map[string]map[string]bool {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	out := map[string]map[string]bool{}
	add := func(name string, extra string, labels map[string]bool) {
		if out[name] == nil {
			out[name] = map[string]bool{}
		}
		for l := range labels {
			out[name][l] = true
		}
		if extra != "" {
			out[name][extra] = true
		}
	}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			ls := map[string]bool{}
			for _, lp := range m.GetLabel() {
				ls[lp.GetName()] = true
			}
			switch {
			case m.Histogram != nil:
				add(name+"_bucket", "le", ls)
				add(name+"_sum", "", ls)
				add(name+"_count", "", ls)
			case m.Summary != nil:
				add(name, "quantile", ls)
				add(name+"_sum", "", ls)
				add(name+"_count", "", ls)
			default:
				add(name, "", ls)
			}
		}
	}
	return out
}

// TestDeployQueriesUseExposedMetrics runs Sluice with a forward target,
// sends one of each kind of request (a push, a remote_write request, a
// rejected push, a rejected remote_write request) so that every family
// appears, and checks that each metric the dashboard and the alert rules
// select is on GET /metrics, with the labels they match and group by.
func TestDeployQueriesUseExposedMetrics(t *testing.T) {
	exprs := queryExprs(t)
	bin := buildBinary(t)
	target := newLoopbackServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	cfg := writeConfig(t, "remote_write:\n  - name: store\n    url: "+target+"/api/v1/write\n")
	p := startSluice(t, bin, "--config.file="+cfg, "--aggregation.interval=1s")

	pushText(t, p, "POST", "/metrics/job/ops", "# TYPE req_total counter\nreq_total 1\n")
	req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
		Labels:  []prompb.Label{{Name: "__name__", Value: "relayed"}, {Name: "job", Value: "ops"}},
		Samples: []prompb.Sample{{Value: 1, Timestamp: time.Now().UnixMilli()}},
	}}}
	if code, _, body := postRW(t, p.url, "application/x-protobuf", marshal(t, req)); code != http.StatusNoContent {
		t.Fatalf("remote_write: %d %s", code, body)
	}
	if r, err := http.Post(p.url+"/metrics/job/ops", "text/plain", strings.NewReader("x{clear_mode=\"avg\"} 1\n")); err != nil || r.StatusCode != http.StatusBadRequest {
		t.Fatalf("rejected push: %v %v", err, r)
	} else {
		r.Body.Close()
	}
	if code, _, _ := postRW(t, p.url, "application/x-protobuf", []byte("not a write request")); code != http.StatusBadRequest {
		t.Fatalf("a garbage remote_write request got %d, want 400", code)
	}
	// sluice_forward_requests_total appears with the first request to the
	// target, at the end of the first 1 s window.
	var body string
	for deadline := time.Now().Add(15 * time.Second); ; {
		_, body = p.get(t, "/metrics")
		if strings.Contains(body, `sluice_forward_requests_total{code="204",remote_name="store"}`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing forwarded to the target within 15 s:\n%s", grepLines(body, "sluice_forward"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	exposed := seriesLabels(t, body)
	// Added by Prometheus when scraping, or by Sluice when forwarding its
	// own metrics; never on /metrics.
	external := map[string]bool{"instance": true, "job": true}

	pq := parser.NewParser(parser.Options{})
	names := map[string]bool{}
	for where, e := range exprs {
		expr, err := pq.ParseExpr(e)
		if err != nil {
			t.Errorf("%s: %q does not parse: %v", where, e, err)
			continue
		}
		parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
			switch n := n.(type) {
			case *parser.VectorSelector:
				if n.Name == "up" { // Prometheus' scrape health, for a scraped Sluice
					return nil
				}
				names[n.Name] = true
				ls, ok := exposed[n.Name]
				if !ok {
					t.Errorf("%s: %s is not on Sluice's /metrics", where, n.Name)
					return nil
				}
				for _, m := range n.LabelMatchers {
					if m.Name != model.MetricNameLabel && !external[m.Name] && !ls[m.Name] {
						t.Errorf("%s: %s has no label %q", where, n.Name, m.Name)
					}
				}
			case *parser.AggregateExpr:
				if n.Without {
					return nil
				}
				for _, l := range n.Grouping {
					if external[l] {
						continue
					}
					found := false
					parser.Inspect(n.Expr, func(m parser.Node, _ []parser.Node) error {
						if vs, ok := m.(*parser.VectorSelector); ok && exposed[vs.Name][l] {
							found = true
						}
						return nil
					})
					if !found {
						t.Errorf("%s: groups by %q, which no metric beneath carries", where, l)
					}
				}
			}
			return nil
		})
	}
	for _, must := range []string{"sluice_forward_samples_sent_total", "sluice_wal_fsync_duration_seconds_bucket", "sluice_rejected_pushes_total", "sluice_remote_write_rejected_total"} {
		if !names[must] {
			t.Errorf("no query uses %s", must)
		}
	}
}
