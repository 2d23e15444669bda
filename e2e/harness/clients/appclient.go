// appclient: Go's pure resolver (build with CGO_ENABLED=0), one JSON line per lookup.
//
//	appclient TYPE NAME [TYPE NAME...]
//
// TYPE: ADDR (net.LookupHost), A / AAAA (LookupIP "ip4" / "ip6"), SRV (LookupSRV with
// an empty service and proto: NAME is the full _service._proto.name), TXT, MX,
// PTR (LookupAddr: NAME is an IP address), CNAME. Each line is
//
//	{"name":..., "type":..., "ok":true, "addresses":[...], "records":[...]}
//	{"name":..., "type":..., "ok":false, "code":"notfound|timeout|temporary|other", "detail":...}
//
// Records are text: SRV "prio weight port target", MX "pref host", TXT the joined strings,
// PTR and CNAME the name. Go's resolver reads /etc/resolv.conf itself (search, ndots,
// options use-vc for TCP) and retries over TCP when a UDP answer is truncated.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
)

type result struct {
	Name      string   `json:"name"`
	Type      string   `json:"type"`
	Ok        bool     `json:"ok"`
	Addresses []string `json:"addresses,omitempty"`
	Records   []string `json:"records,omitempty"`
	Code      string   `json:"code,omitempty"`
	Detail    string   `json:"detail,omitempty"`
}

func trim(name string) string { return strings.TrimSuffix(name, ".") }

func lookup(r *net.Resolver, qtype, name string) ([]string, []string, error) {
	ctx := context.Background()
	switch qtype {
	case "ADDR":
		addrs, err := r.LookupHost(ctx, name)
		return addrs, nil, err
	case "A", "AAAA":
		network := "ip4"
		if qtype == "AAAA" {
			network = "ip6"
		}
		ips, err := r.LookupIP(ctx, network, name)
		var out []string
		for _, ip := range ips {
			out = append(out, ip.String())
		}
		return out, nil, err
	case "SRV":
		_, srvs, err := r.LookupSRV(ctx, "", "", name)
		var out []string
		for _, s := range srvs {
			out = append(out, fmt.Sprintf("%d %d %d %s", s.Priority, s.Weight, s.Port, trim(s.Target)))
		}
		return nil, out, err
	case "TXT":
		txts, err := r.LookupTXT(ctx, name)
		return nil, txts, err
	case "MX":
		mxs, err := r.LookupMX(ctx, name)
		var out []string
		for _, m := range mxs {
			out = append(out, fmt.Sprintf("%d %s", m.Pref, trim(m.Host)))
		}
		return nil, out, err
	case "PTR":
		names, err := r.LookupAddr(ctx, name)
		var out []string
		for _, n := range names {
			out = append(out, trim(n))
		}
		return nil, out, err
	case "CNAME":
		cname, err := r.LookupCNAME(ctx, name)
		if err != nil {
			return nil, nil, err
		}
		return nil, []string{trim(cname)}, nil
	}
	return nil, nil, fmt.Errorf("unsupported type %s", qtype)
}

func code(err error) string {
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		switch {
		case dnsErr.IsNotFound:
			return "notfound"
		case dnsErr.IsTimeout:
			return "timeout"
		case dnsErr.IsTemporary:
			return "temporary"
		}
	}
	return "other"
}

func main() {
	args := os.Args[1:]
	if len(args)%2 != 0 {
		fmt.Fprintln(os.Stderr, "usage: appclient TYPE NAME [TYPE NAME...]")
		os.Exit(2)
	}
	r := &net.Resolver{PreferGo: true}
	out := json.NewEncoder(os.Stdout)
	for i := 0; i < len(args); i += 2 {
		qtype, name := args[i], args[i+1]
		addrs, records, err := lookup(r, qtype, name)
		res := result{Name: name, Type: qtype, Ok: err == nil, Addresses: addrs, Records: records}
		if err != nil {
			res.Code, res.Detail = code(err), err.Error()
		}
		if encErr := out.Encode(res); encErr != nil {
			os.Exit(1)
		}
	}
}
