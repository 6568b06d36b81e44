package sandbox

import (
	"errors"
	"fmt"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
)

// ID identifies a network namespace for as long as the host runs. A netns
// path is only a name: /proc/<pid>/ns/net names the namespace of
// whichever process has that PID now, and a named netns can be removed
// and made again under the same path. The device and inode of the nsfs
// file name the namespace itself, but the kernel hands a freed inode
// number to the next namespace it makes; the netns cookie
// (SO_NETNS_COOKIE, Linux 5.14) is never handed out twice.
type ID struct {
	Dev uint64 `json:"dev"`
	Ino uint64 `json:"ino"`
	// Cookie is 0 on kernels that have none; Dev and Ino decide then.
	Cookie uint64 `json:"cookie,omitempty"`
}

// IsZero reports whether id is unknown: a record written before
// identities were kept.
func (id ID) IsZero() bool { return id == ID{} }

func (id ID) String() string {
	return fmt.Sprintf("nsfs %d:%d, cookie %d", id.Dev, id.Ino, id.Cookie)
}

// matches reports whether got, read now, is the namespace want names.
func (want ID) matches(got ID) bool {
	if want.Dev != got.Dev || want.Ino != got.Ino {
		return false
	}
	return want.Cookie == 0 || got.Cookie == 0 || want.Cookie == got.Cookie
}

// Ref names a joined sandbox: the netns path the runtime gave, and the
// identity of the namespace it held then. Everything that acts inside a
// sandbox takes a Ref and checks the identity on the namespace it opened,
// so that it never acts in a namespace that merely has the same path.
type Ref struct {
	Path string
	ID   ID
}

// RefOf returns the Ref of the network namespace at nsPath now.
func RefOf(nsPath string) (Ref, error) {
	id, err := Identify(nsPath)
	return Ref{Path: nsPath, ID: id}, err
}

// Alive reports whether the namespace ref names still exists at its
// path. With an unknown ID it can only say whether the path is a network
// namespace.
func (ref Ref) Alive() bool {
	sbx, err := ref.openToRead()
	if err != nil {
		return false
	}
	_ = sbx.Close()
	return true
}

// openToRead is open for what only reads: a Ref without identity (a
// record older than identities) is trusted to its path, since reading
// the wrong namespace harms nothing.
func (ref Ref) openToRead() (ns.NetNS, error) {
	if ref.ID.IsZero() {
		return openSandbox(ref.Path)
	}
	return ref.open()
}

// ErrReplaced means a netns path now holds another network namespace
// than the one recorded: the recorded one is gone. Errors that wrap it
// wrap ErrNoSandbox too.
var ErrReplaced = errors.New("the path holds another network namespace than the one joined")

// Identify returns the ID of the network namespace at nsPath.
func Identify(nsPath string) (ID, error) {
	sbx, err := openSandbox(nsPath)
	if err != nil {
		return ID{}, err
	}
	defer sbx.Close()
	return identify(sbx)
}

// open opens the network namespace at ref's path if it is the one ref
// names. A path that holds another one gives an error wrapping both
// ErrNoSandbox and ErrReplaced; so does an unknown want, since nothing
// could prove the namespace at nsPath is the one that was joined.
func (ref Ref) open() (ns.NetNS, error) {
	nsPath, want := ref.Path, ref.ID
	if want.IsZero() {
		return nil, fmt.Errorf("%w: %w: no identity recorded for %s", ErrNoSandbox, ErrReplaced, nsPath)
	}
	sbx, err := openSandbox(nsPath)
	if err != nil {
		return nil, err
	}
	got, err := identify(sbx)
	if err != nil {
		_ = sbx.Close()
		return nil, err
	}
	if !want.matches(got) {
		_ = sbx.Close()
		return nil, fmt.Errorf("%w: %w: %s is %s, the joined one was %s", ErrNoSandbox, ErrReplaced, nsPath, got, want)
	}
	return sbx, nil
}

// identify reads the ID of an open namespace.
func identify(sbx ns.NetNS) (ID, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(sbx.Fd()), &st); err != nil {
		return ID{}, fmt.Errorf("stat netns %s: %w", sbx.Path(), err)
	}
	id := ID{Dev: st.Dev, Ino: st.Ino}
	err := sbx.Do(func(ns.NetNS) error {
		var err error
		id.Cookie, err = netnsCookie()
		return err
	})
	if err != nil {
		return ID{}, fmt.Errorf("netns %s: %w", sbx.Path(), err)
	}
	return id, nil
}

// netnsCookie returns the cookie of the calling thread's network
// namespace, or 0 on a kernel that has none.
func netnsCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("socket for the netns cookie: %w", err)
	}
	defer unix.Close(fd)
	cookie, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if errors.Is(err, unix.ENOPROTOOPT) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read the netns cookie: %w", err)
	}
	return cookie, nil
}
