// Package local implements command:local:Command for the @pulumi/command npm SDK, written for
// pg-cluster with pulumi-go-provider's infer package: a small subset of the real provider
// (no assets/archives), enough for create/update/delete shell commands.
package local

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"

	p "github.com/pulumi/pulumi-go-provider"
	"github.com/pulumi/pulumi-go-provider/infer"
)

// Command is the resource; Go's package name gives its token command:local:Command.
type Command struct{}

// CommandArgs are the inputs, named as the SDK sends them.
type CommandArgs struct {
	Create                 *string           `pulumi:"create,optional"`
	Update                 *string           `pulumi:"update,optional"`
	Delete                 *string           `pulumi:"delete,optional"`
	Dir                    *string           `pulumi:"dir,optional"`
	Environment            map[string]string `pulumi:"environment,optional"`
	Interpreter            []string          `pulumi:"interpreter,optional"`
	Stdin                  *string           `pulumi:"stdin,optional"`
	Logging                *string           `pulumi:"logging,optional"`
	Triggers               []any             `pulumi:"triggers,optional" provider:"replaceOnChanges"`
	AddPreviousOutputInEnv *bool             `pulumi:"addPreviousOutputInEnv,optional"`
}

// CommandState is what is stored: every input, plus the captured output.
type CommandState struct {
	CommandArgs
	Stdout string `pulumi:"stdout"`
	Stderr string `pulumi:"stderr"`
}

func (c *Command) Annotate(a infer.Annotator) {
	a.Describe(c, "Runs a shell command on the machine running Pulumi (pg-cluster's own subset of pulumi-command).")
}

func (a *CommandArgs) Annotate(an infer.Annotator) {
	an.Describe(&a.Create, "The command to run on create.")
	an.Describe(&a.Update, "The command to run on update; `create` when unset.")
	an.Describe(&a.Delete, "The command to run on delete.")
	an.Describe(&a.Dir, "The working directory for the commands.")
	an.Describe(&a.Environment, "Variables added to the provider's environment for the commands.")
	an.Describe(&a.Interpreter, "The interpreter, default [\"/bin/sh\", \"-c\"].")
	an.Describe(&a.Triggers, "Changes to any of these values replace the resource.")
}

func (s *CommandState) Annotate(an infer.Annotator) {
	an.Describe(&s.Stdout, "The standard output of the last command run (one trailing newline trimmed).")
	an.Describe(&s.Stderr, "The standard error of the last command run (one trailing newline trimmed).")
}

func (Command) Create(ctx context.Context, req infer.CreateRequest[CommandArgs]) (infer.CreateResponse[CommandState], error) {
	state := CommandState{CommandArgs: req.Inputs}
	if req.DryRun {
		// Nothing runs in a preview: stdout and stderr stay unknown.
		return infer.CreateResponse[CommandState]{Output: state}, nil
	}
	id, err := uniqueID(req.Name)
	if err != nil {
		return infer.CreateResponse[CommandState]{}, err
	}
	if req.Inputs.Create != nil {
		if err := run(ctx, &state, *req.Inputs.Create, "", ""); err != nil {
			return infer.CreateResponse[CommandState]{}, err
		}
	}
	return infer.CreateResponse[CommandState]{ID: id, Output: state}, nil
}

func (Command) Update(ctx context.Context, req infer.UpdateRequest[CommandArgs, CommandState]) (infer.UpdateResponse[CommandState], error) {
	state := CommandState{CommandArgs: req.Inputs, Stdout: req.State.Stdout, Stderr: req.State.Stderr}
	if req.DryRun {
		return infer.UpdateResponse[CommandState]{Output: state}, nil
	}
	cmd := req.Inputs.Update
	if cmd == nil {
		cmd = req.Inputs.Create
	}
	if cmd != nil {
		if err := run(ctx, &state, *cmd, req.State.Stdout, req.State.Stderr); err != nil {
			return infer.UpdateResponse[CommandState]{}, err
		}
	}
	return infer.UpdateResponse[CommandState]{Output: state}, nil
}

func (Command) Delete(ctx context.Context, req infer.DeleteRequest[CommandState]) (infer.DeleteResponse, error) {
	if req.State.Delete == nil {
		return infer.DeleteResponse{}, nil
	}
	state := req.State
	return infer.DeleteResponse{}, run(ctx, &state, *req.State.Delete, req.State.Stdout, req.State.Stderr)
}

func uniqueID(name string) (string, error) {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return name + "-" + hex.EncodeToString(b), nil
}

// run runs one command with the state's interpreter, dir, environment and stdin, and stores
// its output in state.
func run(ctx context.Context, state *CommandState, command, prevStdout, prevStderr string) error {
	args := append([]string{}, state.Interpreter...)
	if len(args) == 0 {
		args = []string{"/bin/sh", "-c"}
	}
	args = append(args, command)
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	if state.Dir != nil {
		cmd.Dir = *state.Dir
	}
	cmd.Env = os.Environ()
	if state.AddPreviousOutputInEnv == nil || *state.AddPreviousOutputInEnv {
		cmd.Env = append(cmd.Env, "PULUMI_COMMAND_STDOUT="+prevStdout, "PULUMI_COMMAND_STDERR="+prevStderr)
	}
	keys := make([]string, 0, len(state.Environment))
	for k := range state.Environment {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		cmd.Env = append(cmd.Env, k+"="+state.Environment[k])
	}
	if state.Stdin != nil {
		cmd.Stdin = strings.NewReader(*state.Stdin)
	}

	logging := "stdoutAndStderr"
	if state.Logging != nil {
		logging = *state.Logging
	}
	logger := p.GetLogger(ctx)
	var stdout, stderr bytes.Buffer
	var mu sync.Mutex
	outW, errW := io.Writer(&stdout), io.Writer(&stderr)
	if logging == "stdout" || logging == "stdoutAndStderr" {
		outW = io.MultiWriter(&stdout, &lineLogger{mu: &mu, log: func(s string) { logger.InfoStatus(s) }})
	}
	if logging == "stderr" || logging == "stdoutAndStderr" {
		errW = io.MultiWriter(&stderr, &lineLogger{mu: &mu, log: func(s string) { logger.InfoStatus(s) }})
	}
	cmd.Stdout, cmd.Stderr = outW, errW

	err := cmd.Run()
	state.Stdout = strings.TrimSuffix(stdout.String(), "\n")
	state.Stderr = strings.TrimSuffix(stderr.String(), "\n")
	if err != nil {
		return fmt.Errorf("%w: running %q:\n%s\n%s", err, command, state.Stdout, state.Stderr)
	}
	return nil
}

// lineLogger sends complete lines to log.
type lineLogger struct {
	mu  *sync.Mutex
	buf []byte
	log func(string)
}

func (l *lineLogger) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, b...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.log(string(l.buf[:i]))
		l.buf = l.buf[i+1:]
	}
	return len(b), nil
}
