// Command kstatus tells what GitOps tools make of live Kubernetes objects, for Sigil's
// integration tests:
//
//   - kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute), which Flux's health
//     checks, kpt and cli-utils' apply waiters use: Current, InProgress, Failed, ...
//   - Argo CD's resource health checks: a Lua script per group/kind, run the way Argo CD
//     runs one (gopher-lua, only the package, base and table libraries, the object as the
//     global `obj`, one second to finish, a table with `status` and `message` returned).
//
// Input (stdin), JSON:
//
//	{"objects": [<object as the API server returns it>, ...],
//	 "argocdHealth": {"<group>/<Kind>": "<Lua script>", ...}}   (optional)
//
// Output (stdout), JSON, one entry per object, in order:
//
//	[{"kind": "...", "name": "...",
//	  "kstatus": {"status": "Current", "message": "..."},
//	  "argocd": {"status": "Healthy", "message": "..."}}, ...]
//
// `argocd` is present when a script is given for the object's group/kind. A script that
// fails or returns something else than a table with a valid status is an error (exit 1),
// never a guess.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type input struct {
	Objects      []map[string]interface{} `json:"objects"`
	ArgocdHealth map[string]string        `json:"argocdHealth"`
}

type verdict struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

type output struct {
	Kind    string   `json:"kind"`
	Name    string   `json:"name"`
	Kstatus verdict  `json:"kstatus"`
	Argocd  *verdict `json:"argocd,omitempty"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "kstatus: error: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	var in input
	dec := json.NewDecoder(os.Stdin)
	// Numbers as Go's JSON decoder gives them to unstructured objects read from the
	// API server: int64 where they are integers.
	dec.UseNumber()
	if err := dec.Decode(&in); err != nil {
		return fmt.Errorf("reading the input JSON from stdin: %w", err)
	}
	out := make([]output, 0, len(in.Objects))
	for _, raw := range in.Objects {
		obj := normalize(raw).(map[string]interface{})
		u := &unstructured.Unstructured{Object: obj}
		res, err := status.Compute(u)
		if err != nil {
			return fmt.Errorf("kstatus of %s %s: %w", u.GetKind(), u.GetName(), err)
		}
		entry := output{
			Kind:    u.GetKind(),
			Name:    u.GetName(),
			Kstatus: verdict{Status: res.Status.String(), Message: res.Message},
		}
		if script, ok := in.ArgocdHealth[configMapKey(u)]; ok {
			health, err := argocdHealth(obj, script)
			if err != nil {
				return fmt.Errorf("Argo CD health script %s on %s: %w", configMapKey(u), u.GetName(), err)
			}
			entry.Argocd = health
		}
		out = append(out, entry)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// normalize turns json.Number into int64 (or float64), as the API machinery's decoder does.
func normalize(value interface{}) interface{} {
	switch v := value.(type) {
	case map[string]interface{}:
		for key, item := range v {
			v[key] = normalize(item)
		}
		return v
	case []interface{}:
		for i, item := range v {
			v[i] = normalize(item)
		}
		return v
	case json.Number:
		if n, err := v.Int64(); err == nil {
			return n
		}
		f, _ := v.Float64()
		return f
	}
	return value
}

// configMapKey is Argo CD's key for a kind: `group/Kind`, or `Kind` for the core group.
func configMapKey(u *unstructured.Unstructured) string {
	gvk := u.GroupVersionKind()
	if gvk.Group == "" {
		return gvk.Kind
	}
	return gvk.Group + "/" + gvk.Kind
}

// argocdHealth runs a health script in a sandbox like Argo CD's: no standard library but
// package, base and table (Argo CD adds a reduced `os`, which Sigil's scripts do not use).
func argocdHealth(obj map[string]interface{}, script string) (*verdict, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true},
			lua.LString(lib.name)); err != nil {
			return nil, fmt.Errorf("opening the %s library: %w", lib.name, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		return nil, err
	}
	table, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return nil, fmt.Errorf("the script returned %s, not a table", l.Get(-1).Type())
	}
	health := &verdict{
		Status:  lua.LVAsString(table.RawGetString("status")),
		Message: lua.LVAsString(table.RawGetString("message")),
	}
	switch health.Status {
	case "Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown":
		return health, nil
	}
	return nil, fmt.Errorf("the script returned status %q, which Argo CD does not know", health.Status)
}

// toLua converts a decoded JSON value to a Lua value the way Argo CD does: objects and
// arrays become tables (arrays 1-based), numbers LNumber, null nil.
func toLua(l *lua.LState, value interface{}) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case int64:
		return lua.LNumber(v)
	case float64:
		return lua.LNumber(v)
	case []interface{}:
		table := l.CreateTable(len(v), 0)
		for _, item := range v {
			table.Append(toLua(l, item))
		}
		return table
	case map[string]interface{}:
		table := l.CreateTable(0, len(v))
		for key, item := range v {
			table.RawSetH(lua.LString(key), toLua(l, item))
		}
		return table
	}
	return lua.LNil
}
