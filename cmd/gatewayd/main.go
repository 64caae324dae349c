// Command gatewayd is the appliance daemon. See package opensan/appliance/cli for its subcommands.
package main

import (
	"context"
	"os"

	"opensan/appliance/cli"
)

func main() {
	os.Exit(cli.Main(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}
