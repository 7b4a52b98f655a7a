"""
Tests for L{gossip.cli.options}: the options that C{gossip sync}, C{serve}
and C{clone} share with C{twistd gossip} read and show alike in both, and
give one L{SessionSettings}.
"""

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from gossip import tap
from gossip.cli import main
from gossip.cli.options import PEER, SESSION, megabytes, sessionSettings
from gossip.sync.settings import SessionSettings


def _cliActions(command):
    """
    The argparse actions of C{command}'s parser, by long option name.
    """
    parser = main._parser()
    [commands] = [action for action in parser._actions if action.dest == "command"]
    return {
        name[2:]: action
        for action in commands.choices[command]._actions
        for name in action.option_strings
        if name.startswith("--")
    }


def _daemonOptions():
    """
    The daemon's options as usage.Options lists them, by long name: the
    help, and the default.
    """
    options = tap.Options()
    shown = {flag[0]: (flag[2], False) for flag in options.optFlags}
    for parameter in options.optParameters:
        shown[parameter[0]] = (parameter[3], parameter[2])
    shown["identity"] = (options.opt_identity.__doc__, None)
    return shown


class AgreementTests(SynchronousTestCase):
    """
    The shared options are the same options in both parsers.
    """

    def test_cli(self):
        """
        Each shared option of sync and clone, and each session option of
        serve, has the name, default and help of its definition, its
        default shown where the definition says.
        """
        commands = [("sync", SESSION + PEER), ("clone", SESSION + PEER), ("serve", SESSION)]
        for command, shared in commands:
            actions = _cliActions(command)
            for option in shared:
                action = actions[option.name]
                self.assertEqual(action.default, option.default, (command, option.name))
                if option.hidden:
                    continue
                self.assertTrue(action.help.startswith(option.help), (command, option.name))

    def test_daemon(self):
        """
        Each shared option is the daemon's, with the same help and
        default.
        """
        shown = _daemonOptions()
        for option in SESSION + PEER:
            self.assertEqual(shown[option.name], (option.help, option.default), option.name)

    def test_values(self):
        """
        The same arguments give the same values, and the same settings,
        in both parsers.
        """
        argv = [
            "--any-name", "--timeout", "2.5", "--keepalive", "7", "--max-summary", "0.5",
            "-i", "one", "--identity", "two", "--known-hosts", "kh",
            "--accept-new-host-keys",
        ]  # fmt: skip
        cli = main._parser().parse_args(["sync", *argv, "a.log", "b.log"])
        daemon = tap.Options()
        daemon.postOptions = lambda: None
        usage.Options.parseOptions(daemon, argv)
        for option in SESSION + PEER:
            self.assertEqual(
                getattr(cli, option.name.replace("-", "_")), daemon[option.name], option.name
            )
        expected = SessionSettings(anyName=True, timeout=2.5, keepalive=7.0, maxSummary=512 * 1024)
        self.assertEqual(
            sessionSettings(lambda name: getattr(cli, name.replace("-", "_"))), expected
        )
        self.assertEqual(sessionSettings(daemon.__getitem__), expected)

    def test_defaults(self):
        """
        The session options' defaults are those of L{SessionSettings}.
        """
        self.assertEqual(sessionSettings(lambda name: next(
            option.default for option in SESSION if option.name == name
        )), SessionSettings())  # fmt: skip

    def test_badMegabytes(self):
        """
        A bad number of megabytes is one line from either parser.
        """
        self.assertRaises(ValueError, megabytes, "0")
        error = self.assertRaises(
            main.UsageError, main._parser().parse_args, ["sync", "--max-summary", "x", "a", "b"]
        )
        self.assertIn("not a positive number of megabytes: 'x'", str(error))
        daemon = tap.Options()
        daemon.postOptions = lambda: None
        error = self.assertRaises(
            usage.UsageError, usage.Options.parseOptions, daemon, ["--max-summary", "-1"]
        )
        self.assertEqual(str(error), "not a positive number of megabytes: '-1'")
