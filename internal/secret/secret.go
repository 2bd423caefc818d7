// Package secret expands Caddy's placeholders in a configured secret
// (a NATS token, a password), so that an operator can write
// {env.NATS_TOKEN} and keep the secret out of the JSON config that Caddy
// shows on its admin endpoint and autosaves. The expansion happens when
// the config is provisioned; the JSON keeps the placeholder.
package secret

import (
	"fmt"
	"strings"

	"github.com/caddyserver/caddy/v2"
)

// Field is an option that holds a secret: its name, for errors, and its
// value, expanded in place.
type Field struct {
	Name  string
	Value *string
}

// Expand replaces the placeholders in each field's value with their
// values. A placeholder that is unknown, or whose value is empty (an
// unset environment variable), is an error naming the option (after
// prefix): a secret that silently became empty would turn
// authentication off. A value without '{' is left as it is; write \{ for
// a literal brace.
func Expand(prefix string, fields ...Field) error {
	for _, f := range fields {
		if !strings.Contains(*f.Value, "{") {
			continue
		}
		out, err := caddy.NewReplacer().ReplaceOrErr(*f.Value, true, true)
		if err != nil {
			return fmt.Errorf("%s%s: %w (set the environment variable it names, or write the value itself)", prefix, f.Name, err)
		}
		*f.Value = out
	}
	return nil
}
