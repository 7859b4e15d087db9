import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import { ASSETS_DIR } from "./assets";
import { inheritedDependsOn } from "./options";

/** Arguments of a {@link HostStep}: its program's environment and what runs it again. */
export interface HostStepArgs {
  /** Its environment (nodes, credentials, bounds); always passed as a secret. */
  readonly environment: pulumi.Input<Record<string, pulumi.Input<string>>>;
  /** Values whose change must run it again. */
  readonly triggers: pulumi.Input<string>[];
  /**
   * What runs when only its environment changed (a shell command printing the same JSON shape).
   * @default the program again
   */
  readonly update?: string;
}

/**
 * A step of the cluster run on the machine running Pulumi: a program of `assets/` (`node
 * <program>`) as a `local.Command`, and the one JSON line it prints, parsed. The topology step,
 * the post-step, the version guard and the roll gates are each one, under their own type token.
 */
export class HostStep<T> extends pulumi.ComponentResource {
  /** The command that runs the program. */
  public readonly step: command.local.Command;
  /**
   * What the last run printed, parsed. The output holds no secret, but the provider may mark
   * stdout secret because the environment is: it is unwrapped so it can be read as a plain output.
   */
  public readonly result: pulumi.Output<T>;

  constructor(
    type: string,
    name: string,
    program: string,
    args: HostStepArgs,
    opts?: pulumi.ComponentResourceOptions,
  ) {
    super(type, name, {}, opts);
    this.step = new command.local.Command(
      name,
      {
        create: `node ${program}`,
        ...(args.update === undefined ? {} : { update: args.update }),
        dir: ASSETS_DIR,
        environment: pulumi.secret(args.environment),
        triggers: args.triggers,
      },
      { parent: this, dependsOn: inheritedDependsOn(opts) },
    );
    this.result = pulumi.unsecret(this.step.stdout).apply((out) => JSON.parse(out) as T);
    this.registerOutputs({ step: this.step, result: this.result });
  }
}
