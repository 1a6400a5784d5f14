// Package cliutil is the one command-line convention of the three binaries
// (gateway, bridge, firmware-sim), on spf13/cobra: -h/--help exits 0,
// --version and a `version` verb everywhere, flags before or after the verb,
// unknown flags, unknown verbs and wrong argument counts are usage errors
// (exit 2, never taken as a name), failures exit 1, and `completion bash`
// prints a shell completion script.
package cliutil

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fleetgate/fleetgate/version"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

// UsageError is a command-line mistake: exit 2 with the command's usage line.
type UsageError struct{ Err error }

func (e UsageError) Error() string { return e.Err.Error() }
func (e UsageError) Unwrap() error { return e.Err }

// Usagef returns a UsageError.
func Usagef(format string, a ...any) error { return UsageError{fmt.Errorf(format, a...)} }

// Args wraps a cobra positional-argument check so its error is a usage
// error (exit 2).
func Args(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return UsageError{err}
		}
		return nil
	}
}

// NoArgs refuses any positional argument; an unexpected word after a verb
// is an unknown sub-command, with cobra's suggestion when there is one.
func NoArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2
	}
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += fmt.Sprintf("; did you mean %q?", s[0])
	}
	return UsageError{errors.New(msg)}
}

// ExactArgs requires n positional arguments, named in the error.
func ExactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < len(names) {
			return Usagef("%s: missing %s", cmd.CommandPath(), strings.Join(names[len(args):], " "))
		}
		if len(args) > len(names) {
			return Usagef("%s: unexpected argument %q", cmd.CommandPath(), args[len(names)])
		}
		return nil
	}
}

// Prepare applies the convention to root and all its sub-commands: the
// version flag and verb, usage errors for flags and arguments, output to
// stdout/stderr, no usage dump on a runtime failure.
func Prepare(root *cobra.Command, stdout, stderr io.Writer) {
	root.Version = version.String()
	root.SetVersionTemplate(root.Name() + " {{.Version}}\n")
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SilenceErrors = true
	root.SilenceUsage = true
	root.CompletionOptions.HiddenDefaultCmd = false
	root.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "Print the version and exit",
		Args:  NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), root.Name(), version.String())
		},
	})
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		c.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return UsageError{err} })
		if c.Args == nil && c.HasSubCommands() {
			c.Args = NoArgs
		}
		if !c.Runnable() && c.HasSubCommands() {
			// A verb group (`bridge endpoint`) without its verb is a
			// missing argument; a wrong verb is an unknown command.
			c.RunE = func(cmd *cobra.Command, _ []string) error {
				var verbs []string
				for _, s := range cmd.Commands() {
					if s.IsAvailableCommand() {
						verbs = append(verbs, s.Name())
					}
				}
				return Usagef("%s: missing command (%s)", cmd.CommandPath(), strings.Join(verbs, ", "))
			}
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
}

// Execute runs root with args (without the program name), prints an error
// as "NAME: error" on stderr and returns the exit code.
func Execute(root *cobra.Command, args []string) int {
	root.SetArgs(args)
	if args == nil {
		root.SetArgs([]string{})
	}
	cmd, err := root.ExecuteC()
	if err == nil {
		return ExitOK
	}
	if cmd == nil {
		cmd = root
	}
	fmt.Fprintf(root.ErrOrStderr(), "%s: %v\n", root.Name(), err)
	var ue UsageError
	if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") ||
		strings.HasPrefix(err.Error(), "required flag") || strings.HasPrefix(err.Error(), "unknown flag") {
		fmt.Fprintf(root.ErrOrStderr(), "usage: %s\nrun '%s --help' for more\n", cmd.UseLine(), cmd.CommandPath())
		return ExitUsage
	}
	return ExitFailure
}
