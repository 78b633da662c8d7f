package agent

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// SystemFor maps a `uname -m` machine name and a GOOS to the Nix/Guix
// system double (e.g. "x86_64-linux").
func SystemFor(machine, goos string) (string, error) {
	arch := ""
	switch machine {
	case "x86_64", "amd64":
		arch = "x86_64"
	case "aarch64", "arm64":
		arch = "aarch64"
	case "i386", "i486", "i586", "i686":
		arch = "i686"
	case "armv6l", "armv7l", "riscv64", "powerpc64le", "powerpc64", "mips64el", "s390x", "loongarch64":
		arch = machine
	case "ppc64le":
		arch = "powerpc64le"
	default:
		return "", fmt.Errorf("machine type %q has no known Nix system name; pass --system", machine)
	}
	switch goos {
	case "linux", "darwin", "freebsd", "openbsd", "netbsd":
		return arch + "-" + goos, nil
	}
	return "", fmt.Errorf("operating system %q has no known Nix system name; pass --system", goos)
}

// DefaultSystem is this machine's system double.
func DefaultSystem() (string, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", fmt.Errorf("uname: %w", err)
	}
	return SystemFor(unix.ByteSliceToString(u.Machine[:]), runtime.GOOS)
}
