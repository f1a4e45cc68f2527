// Command schemagen writes the JSON schemas that `make check-deploy` gives
// kubeconform, so that the Kubernetes manifests are validated offline (CI
// cannot download kubeconform's schemas from GitHub).
//
// It reads the OpenAPI v3 documents Kubernetes publishes in its source tree
// (api/openapi-spec/v3, in the Go module k8s.io/kubernetes) and writes one
// standalone schema per kind, named as kubeconform looks them up
// ({{ .ResourceKind }}{{ .KindSuffix }}.json, e.g. statefulset-apps-v1.json):
// every $ref inlined, descriptions dropped, and additionalProperties false
// on every object with declared properties (kubeconform's -strict then also
// rejects unknown fields inside them). To regenerate, see
// deploy/kubernetes/schemas/README.md.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

func main() {
	specDir := flag.String("spec-dir", "", "the api/openapi-spec/v3 directory of a Kubernetes source tree")
	out := flag.String("out", "deploy/kubernetes/schemas", "directory to write the schemas to")
	kinds := flag.String("kinds", "v1/ConfigMap,v1/Secret,v1/Service,apps/v1/StatefulSet,policy/v1/PodDisruptionBudget",
		"comma-separated group/version/Kind list (core group: version/Kind)")
	flag.Parse()
	if err := run(*specDir, *out, strings.Split(*kinds, ",")); err != nil {
		fmt.Fprintln(os.Stderr, "schemagen:", err)
		os.Exit(1)
	}
}

type gvk struct{ group, version, kind string }

func parseGVK(s string) (gvk, error) {
	p := strings.Split(s, "/")
	switch len(p) {
	case 2:
		return gvk{version: p[0], kind: p[1]}, nil
	case 3:
		return gvk{group: p[0], version: p[1], kind: p[2]}, nil
	}
	return gvk{}, fmt.Errorf("kind %q: want [group/]version/Kind", s)
}

// docFile is the OpenAPI v3 document holding a group version.
func (g gvk) docFile() string {
	if g.group == "" {
		return "api__" + g.version + "_openapi.json"
	}
	return "apis__" + g.group + "__" + g.version + "_openapi.json"
}

// fileName is kubeconform's {{ .ResourceKind }}{{ .KindSuffix }}.json.
func (g gvk) fileName() string {
	suffix := "-" + g.version
	if g.group != "" {
		suffix = "-" + strings.ToLower(strings.Split(g.group, ".")[0]) + suffix
	}
	return strings.ToLower(g.kind) + suffix + ".json"
}

func (g gvk) apiVersion() string {
	if g.group == "" {
		return g.version
	}
	return g.group + "/" + g.version
}

func run(specDir, out string, kinds []string) error {
	if specDir == "" {
		return errors.New("--spec-dir is required")
	}
	docs := map[string]map[string]any{}
	for _, k := range kinds {
		g, err := parseGVK(strings.TrimSpace(k))
		if err != nil {
			return err
		}
		schemas, ok := docs[g.docFile()]
		if !ok {
			schemas, err = loadSchemas(filepath.Join(specDir, g.docFile()))
			if err != nil {
				return err
			}
			docs[g.docFile()] = schemas
		}
		name, err := componentFor(schemas, g)
		if err != nil {
			return err
		}
		s, err := inline(schemas, schemas[name], map[string]bool{name: true})
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		root := s.(map[string]any)
		props := root["properties"].(map[string]any)
		// As kubeconform's own schemas: only this kind and apiVersion match.
		props["kind"] = map[string]any{"type": "string", "enum": []any{g.kind}}
		props["apiVersion"] = map[string]any{"type": "string", "enum": []any{g.apiVersion()}}
		b, err := json.MarshalIndent(root, "", " ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(out, g.fileName()), append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func loadSchemas(path string) (map[string]any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc struct {
		Components struct {
			Schemas map[string]any `json:"schemas"`
		} `json:"components"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("decode %s: %w", path, err)
	}
	return doc.Components.Schemas, nil
}

// componentFor finds the schema whose x-kubernetes-group-version-kind is g.
func componentFor(schemas map[string]any, g gvk) (string, error) {
	names := make([]string, 0, len(schemas))
	for n := range schemas {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		s, _ := schemas[n].(map[string]any)
		gvks, _ := s["x-kubernetes-group-version-kind"].([]any)
		for _, x := range gvks {
			m, _ := x.(map[string]any)
			if m["group"] == g.group && m["version"] == g.version && m["kind"] == g.kind {
				return n, nil
			}
		}
	}
	return "", fmt.Errorf("no schema for %s %s", g.apiVersion(), g.kind)
}

const refPrefix = "#/components/schemas/"

// inline returns v with every $ref replaced by the referenced schema,
// descriptions removed and objects with properties closed. seen holds the
// references being expanded, to refuse recursive types.
func inline(schemas map[string]any, v any, seen map[string]bool) (any, error) {
	switch x := v.(type) {
	case map[string]any:
		if ref, ok := x["$ref"].(string); ok {
			name := strings.TrimPrefix(ref, refPrefix)
			if seen[name] {
				return nil, fmt.Errorf("recursive type %s", name)
			}
			target, ok := schemas[name]
			if !ok {
				return nil, fmt.Errorf("dangling $ref %s", ref)
			}
			seen[name] = true
			defer delete(seen, name)
			return inline(schemas, target, seen)
		}
		out := make(map[string]any, len(x))
		for k, e := range x {
			if k == "description" || k == "x-kubernetes-group-version-kind" {
				continue
			}
			var r any
			var err error
			if k == "properties" {
				// Field names, not keywords: keep every one.
				r, err = inlineFields(schemas, e, seen)
			} else {
				r, err = inline(schemas, e, seen)
			}
			if err != nil {
				return nil, err
			}
			out[k] = r
		}
		// A property written as allOf: [{$ref}] (to carry a default) is
		// the referenced schema.
		if all, ok := out["allOf"].([]any); ok && len(all) == 1 {
			delete(out, "allOf")
			for k, e := range all[0].(map[string]any) {
				if _, set := out[k]; !set {
					out[k] = e
				}
			}
		}
		if _, ok := out["properties"]; ok {
			if _, set := out["additionalProperties"]; !set {
				out["additionalProperties"] = false
			}
		}
		return out, nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			r, err := inline(schemas, e, seen)
			if err != nil {
				return nil, err
			}
			out[i] = r
		}
		return out, nil
	}
	return v, nil
}

// inlineFields inlines the schema of every field of a properties map.
func inlineFields(schemas map[string]any, v any, seen map[string]bool) (any, error) {
	fields, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("properties is a %T, not an object", v)
	}
	out := make(map[string]any, len(fields))
	for name, f := range fields {
		r, err := inline(schemas, f, seen)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		out[name] = r
	}
	return out, nil
}
