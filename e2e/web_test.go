package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// browser is headless Chromium with a fresh profile, as the tests drive it.
type browser struct {
	t       *testing.T
	profile string
	shots   []string // directories screenshots are written to
}

// newBrowser finds Chromium; without it the test skips, except under CI.
func newBrowser(t *testing.T) *browser {
	t.Helper()
	if _, err := exec.LookPath("chromium"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("chromium is required under CI (scripts/install-deps.sh installs it): %v", err)
		}
		t.Skipf("chromium not installed (scripts/install-deps.sh installs it): %v", err)
	}
	b := &browser{t: t, profile: t.TempDir(), shots: []string{t.TempDir()}}
	// GBC_WEB_SCREENSHOTS keeps a copy of the screenshots to look at.
	if d := os.Getenv("GBC_WEB_SCREENSHOTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		b.shots = append(b.shots, d)
	}
	return b
}

func (b *browser) run(args ...string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--user-data-dir=" + b.profile}
	cmd := exec.CommandContext(ctx, "chromium", append(base, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		b.t.Fatalf("chromium %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// dom is the page's DOM after its scripts ran.
func (b *browser) dom(url string) string {
	b.t.Helper()
	return b.run("--dump-dom", url)
}

// screenshot saves the page as name.png in each screenshot directory.
func (b *browser) screenshot(url, name string, height int) {
	b.t.Helper()
	file := filepath.Join(b.shots[0], name+".png")
	b.run("--hide-scrollbars", fmt.Sprintf("--window-size=1360,%d", height), "--screenshot="+file, url)
	png, err := os.ReadFile(file)
	if err != nil || len(png) < 1000 {
		b.t.Fatalf("screenshot of %s: %d bytes, %v", url, len(png), err)
	}
	for _, d := range b.shots[1:] {
		if err := os.WriteFile(filepath.Join(d, name+".png"), png, 0o644); err != nil {
			b.t.Fatal(err)
		}
	}
}

// mustContain checks that a page's DOM holds every pattern.
func mustContain(t *testing.T, page, dom string, patterns ...string) {
	t.Helper()
	for _, p := range patterns {
		if !regexp.MustCompile(p).MatchString(dom) {
			t.Errorf("%s: DOM lacks %q\n%s", page, p, dom)
		}
	}
}

var webAddrRE = regexp.MustCompile(`msg="web interface listening" http=(127\.0\.0\.1:\d+)`)

// TestWebInterface: a farm that has built, failed and is running builds,
// seen through its web interface in headless Chromium (each page's DOM
// checked, screenshots saved), the running build's log followed with
// server-sent events, and the same pages through the SSH port with the
// real ssh client's -L for a reader key, refused for an agent key.
func TestWebInterface(t *testing.T) {
	br := newBrowser(t)
	f := &farm{t: t, dir: t.TempDir()}
	f.state = filepath.Join(f.dir, "state")
	f.admin = newKey(t, f.dir, "admin")
	f.startCoordinator("--web-listen", "127.0.0.1:0")
	web := "http://" + f.coord.log.waitFor(t, webAddrRE, 30*time.Second)[1]

	agent := f.addAgent("builder-1", "--max-parallel-builds", "2")
	// A name with markup: the pages must show it as text.
	hostileKey := newKey(t, f.dir, "hostile")
	hostile := f.mustSSH(fmt.Sprintf(`agent new --name '<img src=x onerror=alert(1)>evil' --key '%s'`, hostileKey.Pub))

	nonce := fmt.Sprint(time.Now().UnixNano())
	top := instantiate(t, nonce, "top")
	okID := ""
	for _, id := range lines(f.mustSSH("build --ensure-all-related-derivation-outputs-have-successful-builds " + top)) {
		if f.showSched(id).Derivation == top {
			okID = id
		}
	}
	if okID == "" {
		t.Fatal("no build of the top derivation among the submitted ones")
	}
	failID := lines(f.mustSSH("build " + instantiate(t, nonce, "broken")))[0]
	f.waitState(failID, 3*time.Minute, "failed")
	f.waitState(okID, 3*time.Minute, "succeeded")
	slowID := lines(f.mustSSH("build " + instantiate(t, nonce, "slow", "--argstr", "slowSleep", "30")))[0]
	f.waitState(slowID, 3*time.Minute, "started")
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(f.ssh(f.admin, "log "+slowID).Stdout, "first line") {
		if time.Now().After(deadline) {
			t.Fatal("the slow build's first line did not arrive within a minute")
		}
		time.Sleep(200 * time.Millisecond)
	}

	// The running build first, while it runs.
	stream := make(chan string, 1)
	go func() { stream <- readLogStream(web + "/builds/" + slowID + "/log") }()
	dom := br.dom(web + "/builds/" + slowID + "/log")
	mustContain(t, "log of the running build", dom, `<pre id="log" data-stream="/builds/`+slowID+`/log\?attempt=1&amp;from=\d+">`,
		`slow build: first line`, `id="live"`, `src="/static/log.js"`)
	br.screenshot(web+"/builds/"+slowID+"/log", "log-running", 700)
	dom = br.dom(web + "/builds/" + slowID)
	mustContain(t, "running build", dom, `badge run">started`, `id="timeline"`, `class="phase building"`, `Follow the log`,
		`href="/agents/`+agent.ID+`"`)
	br.screenshot(web+"/builds/"+slowID, "build-running", 900)
	dom = br.dom(web + "/")
	mustContain(t, "overview", dom, `<svg id="activity"`, `<polyline class="queue"`, `<rect class="ok"`, `<rect class="bad"`,
		`>builder-1</a>`, `badge connected">connected`, `1/2`, `badge never-connected`,
		`&lt;img src=x onerror=alert\(1\)&gt;evil`)
	if strings.Contains(dom, "<img src=x") {
		t.Error("overview: the agent's name became markup")
	}
	br.screenshot(web+"/", "overview", 1000)

	dom = br.dom(web + "/builds")
	for _, id := range []string{okID, failID, slowID} {
		mustContain(t, "builds", dom, `href="/builds/`+id+`"`)
	}
	mustContain(t, "builds", dom, `badge ok">succeeded`, `badge bad">failed`, `badge run">started`, `gbc-demo-top`)
	br.screenshot(web+"/builds", "builds", 900)
	dom = br.dom(web + "/builds?state=failed")
	mustContain(t, "failed builds", dom, `href="/builds/`+failID+`"`, `<option value="failed" selected(="")?>`)
	if strings.Contains(dom, `href="/builds/`+okID+`"`) {
		t.Error("builds?state=failed lists a succeeded build")
	}
	dom = br.dom(web + "/builds?name=gbc-demo-top")
	mustContain(t, "builds by name", dom, `href="/builds/`+okID+`"`)
	if strings.Contains(dom, `href="/builds/`+failID+`"`) {
		t.Error("builds?name=gbc-demo-top lists the broken build")
	}
	dom = br.dom(web + "/builds?limit=1")
	mustContain(t, "first page of one", dom, `href="/builds/`+slowID+`"`, `id="older" href="/builds\?before=\d+&amp;limit=1"`)

	dom = br.dom(web + "/builds/" + okID)
	mustContain(t, "succeeded build", dom, `badge ok">succeeded`, `<a href="/cache/[0-9a-z]{32}\.narinfo">narinfo</a>`,
		`<a href="/cache/nar/[0-9a-z]+\.nar[.a-z]*">NAR</a>`, `id="attempts"`, `cores`)
	br.screenshot(web+"/builds/"+okID, "build-succeeded", 900)
	narinfo := regexp.MustCompile(`href="(/cache/[0-9a-z]{32}\.narinfo)"`).FindStringSubmatch(dom)
	if narinfo != nil {
		if body := httpGet(t, web+narinfo[1]); !strings.Contains(body, "StorePath: ") || !strings.Contains(body, "Sig: ") {
			t.Errorf("narinfo link %s: %q", narinfo[1], body)
		}
	}
	dom = br.dom(web + "/builds/" + failID)
	mustContain(t, "failed build", dom, `badge bad">failed`, `id="failure"`, `>build</span>`)
	br.screenshot(web+"/builds/"+failID, "build-failed", 800)
	dom = br.dom(web + "/builds/" + failID + "/log")
	mustContain(t, "failed build's log", dom, `<pre id="log">`)
	if strings.Contains(dom, `id="live"`) {
		t.Error("the log of an ended attempt says it is live")
	}

	dom = br.dom(web + "/agents")
	mustContain(t, "agents", dom, `href="/agents/`+agent.ID+`"`, `href="/agents/`+hostile+`"`, `&lt;img src=x onerror=alert\(1\)&gt;evil`)
	br.screenshot(web+"/agents", "agents", 500)
	dom = br.dom(web + "/agents/" + agent.ID)
	mustContain(t, "agent", dom, `<span class="num" id="failed">1</span>`, `href="/builds/`+okID+`"`, `href="/builds/`+slowID+`"`,
		`x86_64-linux`)
	br.screenshot(web+"/agents/"+agent.ID, "agent", 900)
	dom = br.dom(web + "/events")
	mustContain(t, "events", dom, `<table id="events"`, `ev submitted">submitted`, `ev succeeded">succeeded`, `ev failed">failed`,
		`ev agent-connected">agent-connected`)
	br.screenshot(web+"/events", "events", 900)
	dom = br.dom(web + "/builds/no-such-build")
	mustContain(t, "unknown build", dom, `<h1>Not found</h1>`)

	// The live log: everything after the page's offset arrived as events,
	// through the end of the attempt.
	select {
	case got := <-stream:
		if !strings.Contains(got, "slow build: last line") || !strings.HasSuffix(got, "[end]") {
			t.Errorf("log stream of the running build: %q", got)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the log stream did not end within 2 minutes of the page")
	}
	f.waitState(slowID, 3*time.Minute, "succeeded")

	// Through the SSH port: a reader key's ssh -L reaches the interface,
	// an agent key's does not.
	reader := newKey(t, f.dir, "reader")
	f.mustSSH(fmt.Sprintf("key add --role reader '%s'", reader.Pub))
	port := freePort(t)
	fwd := f.sshForward(reader, port)
	body := waitGet(t, "http://127.0.0.1:"+port+"/builds/"+okID)
	if !strings.Contains(body, `badge ok">succeeded`) {
		t.Errorf("build page through ssh -L: %q", body)
	}
	fwd.stop(t)
	port = freePort(t)
	fwd = f.sshForward(agent.Key, port)
	// Until ssh listens the local port refuses; then each connection is
	// refused by the coordinator, which ssh reports.
	for i := 0; !strings.Contains(fwd.log.String(), "administratively prohibited"); i++ {
		if body, err := getOnce("http://127.0.0.1:" + port + "/"); err == nil {
			t.Fatalf("an agent key's ssh -L reached the web interface: %q", body)
		}
		if i == 300 {
			t.Fatalf("ssh -L with an agent key: no refusal reported in 30s:\n%s", fwd.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// readLogStream reads a log's server-sent events until "end", returning
// the log text and "[end]".
func readLogStream(url string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	var out strings.Builder
	sc := bufio.NewScanner(resp.Body)
	event := ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = line[len("event: "):]
		case strings.HasPrefix(line, "data: ") && event == "log":
			var s string
			if json.Unmarshal([]byte(line[len("data: "):]), &s) == nil {
				out.WriteString(s)
			}
		case strings.HasPrefix(line, "data: ") && event == "end":
			return out.String() + "[end]"
		}
	}
	return out.String()
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
}

// sshForward runs the real ssh client with -N -L PORT:web.gbc:80.
func (f *farm) sshForward(key sshKey, port string) *proc {
	return start(f.t, "ssh", "-N", "-p", f.port, "-i", key.Path,
		"-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes",
		"-o", "UserKnownHostsFile="+f.knownHosts, "-o", "StrictHostKeyChecking=yes", "-F", "/dev/null",
		"-L", "127.0.0.1:"+port+":web.gbc:80", "someone@127.0.0.1")
}

func getOnce(url string) (string, error) {
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("%s: %s", url, resp.Status)
	}
	return string(b), nil
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	s, err := getOnce(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return s
}

// waitGet retries until the forward is up (bounded).
func waitGet(t *testing.T, url string) string {
	t.Helper()
	var err error
	for range 100 {
		var s string
		if s, err = getOnce(url); err == nil {
			return s
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("GET %s through the forward: %v", url, err)
	return ""
}
