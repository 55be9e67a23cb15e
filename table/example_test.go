package table_test

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/mxfront/mxfront/table"
)

func ExampleSet_OpenMaps() {
	s := table.NewSet(table.Options{})
	defer s.Close()
	// "virtual_alias_maps = inline:{...}, regexp:{...}"
	maps, err := s.OpenMaps("inline:{ Postmaster@example.com=root }, regexp:{ {/^(.+)-owner@/ ${1}-admin} }")
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	for _, key := range []string{"postmaster@EXAMPLE.com", "list-owner@example.com", "nobody@example.com"} {
		v, ok, err := maps.Lookup(ctx, key)
		fmt.Printf("%s: %q %v %v\n", key, v, ok, err)
	}
	// Output:
	// postmaster@EXAMPLE.com: "root" true <nil>
	// list-owner@example.com: "list-admin" true <nil>
	// nobody@example.com: "" false <nil>
}

func ExampleDomainList() {
	relayDomains, err := table.NewDomainList([]string{"example.com, .example.net, !old.example.org, .example.org"}, nil, false)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, d := range []string{"example.com", "mx.example.net", "old.example.org", "new.example.org"} {
		ok, _ := relayDomains.Match(context.Background(), d)
		fmt.Println(d, ok)
	}
	// Output:
	// example.com true
	// mx.example.net true
	// old.example.org false
	// new.example.org true
}

func ExampleNetList() {
	mynetworks, err := table.NewNetList([]string{"127.0.0.0/8 [::1]/128 192.0.2.0/24"}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, ip := range []string{"127.0.0.1", "::1", "::ffff:192.0.2.7", "198.51.100.1"} {
		ok, _ := mynetworks.Match(context.Background(), netip.MustParseAddr(ip))
		fmt.Println(ip, ok)
	}
	// Output:
	// 127.0.0.1 true
	// ::1 true
	// ::ffff:192.0.2.7 true
	// 198.51.100.1 false
}
