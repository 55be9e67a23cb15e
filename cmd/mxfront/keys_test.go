package main

import (
	"reflect"
	"strings"
)

// tomlKeys lists the top-level TOML keys of a struct.
func tomlKeys(v any) []string {
	var keys []string
	t := reflect.TypeOf(v).Elem()
	for i := 0; i < t.NumField(); i++ {
		tag := t.Field(i).Tag.Get("toml")
		if tag == "" || tag == "-" {
			continue
		}
		keys = append(keys, strings.Split(tag, ",")[0])
	}
	return keys
}
