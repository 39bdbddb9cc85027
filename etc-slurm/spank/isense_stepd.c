/*
 * slurmstepd side. Runs in each task's forked child, still root, before the
 * child becomes the user and execs: the batch script and srun tasks alike.
 *
 * Who is contained: tasks of jobs with --isense-worker, and every task of the
 * service account (code running as that account could otherwise start a step
 * or job without the option). Everyone else's jobs are never touched and never
 * failed by this file.
 *
 * A contained task that cannot be set up exits here (fail closed), even when
 * plugstack marks the plugin optional (Slurm ignores optional plugins' errors).
 */
#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "isense.h"

#define MASK_FLAGS (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
#define MASK_DATA "mode=0555,size=4k"

static void fail_task(const char *fmt, ...)
	__attribute__((format(printf, 1, 2), noreturn));

static void fail_task(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	slurm_error("isense: worker task refused: %s", msg);
	_exit(1);
}

/* True when path lies below an earlier mask, hidden already. */
static bool covered(int upto, const char *path)
{
	int i;

	for (i = 0; i < upto; i++) {
		size_t n = strlen(isense_cfg.masks[i]);
		if (strncmp(path, isense_cfg.masks[i], n) == 0 &&
		    (path[n] == '/' || path[n] == '\0'))
			return true;
	}
	return false;
}

static void mask_paths(void)
{
	int i;

	if (unshare(CLONE_NEWNS) < 0)
		fail_task("unshare(CLONE_NEWNS): %s", strerror(errno));
	/* Our mounts must not propagate back to the host; host mounts may
	 * still propagate in. */
	if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0)
		fail_task("make / rslave: %s", strerror(errno));
	for (i = 0; i < isense_cfg.n_masks; i++) {
		const char *path = isense_cfg.masks[i];
		if (covered(i, path))
			continue;
		if (mount("isense-mask", path, "tmpfs", MASK_FLAGS,
			  MASK_DATA) < 0)
			fail_task("mount empty tmpfs over %s: %s", path,
				  strerror(errno));
	}
	/* A cwd inside a masked path would still reach what lies beneath;
	 * Slurm re-enters the job's cwd by name afterwards. */
	if (chdir("/") < 0)
		fail_task("chdir /: %s", strerror(errno));
}

static void set_env(spank_t sp, const char *name, const char *value)
{
	spank_err_t err = spank_setenv(sp, name, value, 1);

	if (err != ESPANK_SUCCESS)
		fail_task("set %s: %s", name, spank_strerror(err));
}

int isense_stepd_task_privileged(spank_t sp)
{
	uid_t job_uid, allowed;
	bool have_allowed;

	if (spank_get_item(sp, S_JOB_UID, &job_uid) != ESPANK_SUCCESS) {
		if (isense_worker_requested)
			fail_task("cannot read the job's uid");
		return 0;
	}
	have_allowed = isense_cfg.valid &&
		       isense_service_uid(&isense_cfg, &allowed) == 0;

	if (!isense_worker_requested && !(have_allowed && job_uid == allowed))
		return 0;

	if (!isense_cfg.valid)
		fail_task("the isense plugstack arguments are invalid (see the "
			  "slurmstepd log line above)");
	if (!have_allowed)
		fail_task("service account '%s' is not a user on this node",
			  isense_cfg.service_account);
	if (job_uid != allowed)
		fail_task("uid %u used --isense-worker, which is reserved for "
			  "'%s'", (unsigned) job_uid,
			  isense_cfg.service_account);

	mask_paths();
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		fail_task("prctl(PR_SET_NO_NEW_PRIVS): %s", strerror(errno));

	if (isense_worker_requested)
		set_env(sp, "ISENSE_WORKER", "1");
	set_env(sp, "ISENSE_MASKED", isense_cfg.masks_joined);
	set_env(sp, "ISENSE_NO_NEW_PRIVS", "1");
	return 0;
}
