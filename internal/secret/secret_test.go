package secret

import (
	"strings"
	"testing"
)

func TestExpand(t *testing.T) {
	t.Setenv("NETSODY_TEST_SECRET", "s3cret-from-env")
	t.Setenv("NETSODY_TEST_EMPTY", "")
	for _, c := range []struct {
		in, want, err string
	}{
		{"plain-token", "plain-token", ""},
		{"{env.NETSODY_TEST_SECRET}", "s3cret-from-env", ""},
		{"pre-{env.NETSODY_TEST_SECRET}", "pre-s3cret-from-env", ""},
		{"{env.NETSODY_TEST_UNSET_FOR_SURE}", "", "cluster: nats_token: "},
		{"{env.NETSODY_TEST_EMPTY}", "", "cluster: nats_token: "},
		{"{no.such.placeholder}", "", "cluster: nats_token: "},
		{`\{literal\}`, "{literal}", ""},
	} {
		v := c.in
		err := Expand("cluster: ", Field{"nats_token", &v})
		switch {
		case c.err != "" && (err == nil || !strings.HasPrefix(err.Error(), c.err)):
			t.Errorf("%q: %v, want an error naming the option", c.in, err)
		case c.err == "" && (err != nil || v != c.want):
			t.Errorf("%q: %q, %v; want %q", c.in, v, err, c.want)
		}
	}
}
